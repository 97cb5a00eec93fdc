#include "options.h"

// -D takes port lists ("80,443") and macro values containing commas: no
// splitting of repeated-option values on commas.
#define CXXOPTS_VECTOR_DELIMITER '\0'
#include <cxxopts.hpp>

#include <algorithm>
#include <charconv>
#include <type_traits>
#include <cmath>

namespace tcptrace {
namespace {

constexpr const char* kUsageLine = "Usage: tcptrace-bcc --program NAME | --program-file FILE [options]";
constexpr const char* kDescription =
    "Compile a BPF program with BCC at run time, attach it, and print one JSON object per kernel event on stdout.";

cxxopts::Options make_parser() {
  // usage_text() writes the usage line and the description itself; cxxopts
  // only formats the option table.
  cxxopts::Options parser("tcptrace-bcc");
  parser.custom_help("");
  // Values are read as strings and converted here, so every bad value gets
  // an error naming its option instead of cxxopts' generic text.
  parser.add_options()
      ("program", "built-in program to run (see --list)", cxxopts::value<std::string>(), "NAME")
      ("program-file", "run the BPF program in FILE", cxxopts::value<std::string>(), "FILE")
      ("programs-dir", "directory holding NAME.bpf.c programs", cxxopts::value<std::string>(), "DIR")
      ("list", "list the built-in programs")
      ("print-source", "print the source and flags handed to BCC, then exit")
      ("watch", "recompile and swap the probes when the program file changes")
      ("record-raw", "also write every raw sample to FILE (for offline decoding)", cxxopts::value<std::string>(),
       "FILE")
      ("L,sport", "local ports to trace: 80,443,8000-8100", cxxopts::value<std::string>(), "LIST")
      ("D,dport", "remote ports to trace (a LIST of ports); -D NAME[=VALUE] defines a macro instead",
       cxxopts::value<std::vector<std::string>>(), "LIST")
      ("pid", "only connects made by this process id", cxxopts::value<std::string>(), "PID")
      ("min-us", "only connects at least this slow (failures are always shown), or round-trip times at least this long",
       cxxopts::value<std::string>(), "N")
      ("no-failures", "do not report failed connects")
      ("attach", "attach method: auto, kfunc, kprobe or tracepoint", cxxopts::value<std::string>(), "METHOD")
      ("check", "compile and load through the verifier, print the attach plan as JSON, attach nothing")
      ("4,ipv4", "trace IPv4 only")
      ("6,ipv6", "trace IPv6 only")
      ("duration", "stop after SECONDS", cxxopts::value<std::string>(), "SECONDS")
      ("count", "stop after N events", cxxopts::value<std::string>(), "N")
      ("kernel-headers", "kernel header tree to compile against", cxxopts::value<std::string>(), "DIR")
      ("cache-dir", "keep compiled programs in DIR (default /var/cache/tcptrace-bcc; owned by this user, mode 0700)",
       cxxopts::value<std::string>(), "DIR")
      ("no-cache", "always compile; neither read nor write the compile cache")
      ("buffer", "output buffers: auto, ringbuf or perf", cxxopts::value<std::string>(), "KIND")
      ("buffer-pages", "buffer pages per CPU (power of two, default 64, at most 1024)",
       cxxopts::value<std::string>(), "N")
      ("metrics", "serve Prometheus metrics at http://ADDR/metrics (IP:PORT, e.g. 127.0.0.1:9464)",
       cxxopts::value<std::string>(), "ADDR")
      ("web-config", "TLS and basic authentication for --metrics, from FILE in the Prometheus exporter-toolkit "
       "format (tls_server_config: cert_file, key_file; basic_auth_users: NAME: BCRYPT-HASH)",
       cxxopts::value<std::string>(), "FILE")
      ("output", "event lines on stdout: json (default), text (columns and histograms for people) or none",
       cxxopts::value<std::string>(), "KIND")
      ("interval", "print the program's tables (BPF_HISTOGRAM, counts in BPF_HASH/BPF_ARRAY) and declared "
       "metrics every SECONDS, clearing the tables after each print; both are printed once more at the end",
       cxxopts::value<std::string>(), "SECONDS")
      ("accumulate", "never clear the program's tables, and print the declared metrics' totals: each print "
       "shows the totals since the start")
      ("metrics-label", "add an opt-in label the program declares (e.g. dport); repeatable",
       cxxopts::value<std::vector<std::string>>(), "LABEL")
      ("metrics-label-limit", "distinct values an opt-in label keeps before folding the rest into \"other\" "
       "(default 10, at most 100)", cxxopts::value<std::string>(), "N")
      ("aggregate", "where --metrics counts: auto (the kernel with --output none, when the program can), kernel "
       "or host", cxxopts::value<std::string>(), "WHERE")
      ("h,help", "print this help")
      ("version", "print the version");
  return parser;
}

template <class T>
Result<T> parse_number(const std::string& option, const std::string& text) {
  T value{};
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range) {
    return usage_error("--" + option + ": '" + text + "' is out of range");
  }
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    if constexpr (std::is_unsigned_v<T>) {
      if (!text.empty() && text[0] == '-') {
        return usage_error("--" + option + ": '" + text + "' is negative; it must be 0 or more");
      }
    }
    return usage_error("--" + option + ": '" + text + "' is not a number");
  }
  return value;
}

// cxxopts names an unknown option between typographic quotes; say it plainly.
std::string unknown_option_message(const std::string& what) {
  const std::string open = "\u2018", close = "\u2019";
  const size_t a = what.find(open);
  const size_t b = what.find(close);
  if (a == std::string::npos || b == std::string::npos || b < a) return what;
  const std::string name = what.substr(a + open.size(), b - a - open.size());
  return "unknown option '" + std::string(name.size() == 1 ? "-" : "--") + name + "' (see --help)";
}

bool is_macro_name(const std::string& name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// -D carries two meanings, as in bcc's tcpstates (-D remote ports) and in
// compilers (-D NAME=VALUE). A port list starts with a digit and a macro name
// cannot, so the first character decides.
Status take_dash_d(Options& options, const std::vector<std::string>& values) {
  std::vector<std::string> port_lists;
  for (const std::string& value : values) {
    const bool looks_like_ports = !value.empty() && value[0] >= '0' && value[0] <= '9';
    if (looks_like_ports && value.find('=') == std::string::npos) {
      port_lists.push_back(value);
      continue;
    }
    const size_t eq = value.find('=');
    UserMacro macro;
    macro.name = value.substr(0, eq);
    if (eq != std::string::npos) macro.value = value.substr(eq + 1);
    if (!is_macro_name(macro.name)) {
      return usage_error("-D: '" + value + "' is neither a port list nor NAME[=VALUE] with a C identifier");
    }
    if (is_reserved_macro_name(macro.name)) {
      return usage_error("-D: macro " + macro.name +
                         " is reserved for the host's own filters (names starting FILTER_ or TCPTRACE_)");
    }
    for (const UserMacro& earlier : options.macros) {
      if (earlier.name == macro.name) return usage_error("-D: macro " + macro.name + " is defined twice");
    }
    options.macros.push_back(std::move(macro));
  }
  if (port_lists.size() > 1) return usage_error("--dport: given more than once (use one LIST: 80,443)");
  if (port_lists.size() == 1) {
    auto ports = PortSet::parse("--dport", port_lists[0]);
    if (!ports) return std::move(ports).take_error();
    options.filters.dport = std::move(ports).value();
  }
  return {};
}

}  // namespace

// The GNU layout ("Usage: PROG ARGS", the description, "Options:"), which
// help2man turns into the man page's SYNOPSIS, DESCRIPTION and OPTIONS
// (debian/rules): the man page's options are these, never a second copy.
std::string usage_text() {
  std::string table = make_parser().help({}, false);
  table.erase(0, table.find_first_not_of('\n'));
  return std::string(kUsageLine) + "\n" + kDescription + "\n\nOptions:\n" + table;
}

Result<Options> parse_options(int argc, const char* const* argv) {
  cxxopts::Options parser = make_parser();
  Options options;
  try {
    cxxopts::ParseResult parsed = parser.parse(argc, argv);
    if (!parsed.unmatched().empty()) {
      return usage_error("unexpected argument '" + parsed.unmatched().front() + "'");
    }
    for (const char* single : {"program", "programs-dir", "sport", "duration", "count", "kernel-headers",
                               "buffer-pages", "ipv4", "ipv6", "pid", "min-us", "no-failures", "attach", "check",
                               "program-file", "list", "print-source", "watch", "record-raw", "buffer", "metrics", "web-config", "output",
                               "metrics-label-limit", "aggregate", "interval", "accumulate", "cache-dir", "no-cache"}) {
      if (parsed.count(single) > 1) return usage_error(std::string("--") + single + " given more than once");
    }
    options.help = parsed.count("help") > 0;
    options.version = parsed.count("version") > 0;
    options.list = parsed.count("list") > 0;
    if (parsed.count("programs-dir")) options.programs_dir = parsed["programs-dir"].as<std::string>();
    if (options.help || options.version || options.list) return options;

    if (parsed.count("program")) options.program = parsed["program"].as<std::string>();
    if (parsed.count("program-file")) options.program_file = parsed["program-file"].as<std::string>();
    options.print_source = parsed.count("print-source") > 0;
    options.watch = parsed.count("watch") > 0;
    if (parsed.count("record-raw")) options.record_raw = parsed["record-raw"].as<std::string>();
    if (parsed.count("kernel-headers")) options.kernel_headers = parsed["kernel-headers"].as<std::string>();
    if (parsed.count("cache-dir")) options.cache_dir = parsed["cache-dir"].as<std::string>();
    options.no_cache = parsed.count("no-cache") > 0;
    if (options.no_cache && options.cache_dir) return usage_error("--no-cache and --cache-dir do not go together");
    if (options.cache_dir && options.cache_dir->empty()) return usage_error("--cache-dir: empty directory name");
    if (parsed.count("sport")) {
      auto ports = PortSet::parse("--sport", parsed["sport"].as<std::string>());
      if (!ports) return std::move(ports).take_error();
      options.filters.sport = std::move(ports).value();
    }
    if (parsed.count("dport")) {
      if (Status s = take_dash_d(options, parsed["dport"].as<std::vector<std::string>>()); !s) {
        return std::move(s).take_error();
      }
    }
    if (parsed.count("pid")) {
      const std::string text = parsed["pid"].as<std::string>();
      auto pid = parse_number<uint64_t>("pid", text);
      if (!pid && !text.empty() && text[0] == '-') {
        return usage_error("--pid: '" + text + "' is not a process id (1-4194304)");
      }
      if (!pid) return std::move(pid).take_error();
      // PID_MAX_LIMIT (include/linux/threads.h) is 4194304 on 64-bit.
      if (*pid == 0 || *pid > 4194304) {
        return usage_error("--pid: '" + text + "' is not a process id (1-4194304)");
      }
      options.filters.pid = static_cast<uint32_t>(*pid);
    }
    if (parsed.count("min-us")) {
      const std::string text = parsed["min-us"].as<std::string>();
      auto min_us = parse_number<uint64_t>("min-us", text);
      if (!min_us) return std::move(min_us).take_error();
      options.filters.min_us = *min_us;
    }
    options.filters.no_failures = parsed.count("no-failures") > 0;
    if (parsed.count("attach")) {
      const std::string text = parsed["attach"].as<std::string>();
      if (text != "auto") {
        options.attach = method_from_name(text);
        if (!options.attach) {
          return usage_error("--attach: '" + text + "' is not one of auto, kfunc, kprobe, tracepoint");
        }
      }
    }
    options.check = parsed.count("check") > 0;
    if (parsed.count("buffer")) {
      const std::string text = parsed["buffer"].as<std::string>();
      if (text == "auto") {
        options.buffer = Options::Buffer::automatic;
      } else if (text == "ringbuf") {
        options.buffer = Options::Buffer::ring;
      } else if (text == "perf") {
        options.buffer = Options::Buffer::perf;
      } else {
        return usage_error("--buffer: '" + text + "' is not one of auto, ringbuf, perf");
      }
    }
    if (parsed.count("metrics")) {
      auto address = parse_metrics_address(parsed["metrics"].as<std::string>());
      if (!address) return std::move(address).take_error();
      options.metrics = std::move(address).value();
    }
    if (parsed.count("web-config")) options.web_config = parsed["web-config"].as<std::string>();
    if (parsed.count("output")) {
      const std::string text = parsed["output"].as<std::string>();
      if (text == "json") {
        options.output = Options::Output::json;
      } else if (text == "none") {
        options.output = Options::Output::none;
      } else if (text == "text") {
        options.output = Options::Output::text;
      } else {
        return usage_error("--output: '" + text + "' is not one of json, text, none");
      }
    }
    if (parsed.count("metrics-label")) {
      // Which labels a program offers is its own declaration, checked once
      // its source is read.
      for (const std::string& text : parsed["metrics-label"].as<std::vector<std::string>>()) {
        if (!is_macro_name(text)) return usage_error("--metrics-label: '" + text + "' is not a label name");
        if (std::find(options.metrics_labels.begin(), options.metrics_labels.end(), text) ==
            options.metrics_labels.end()) {
          options.metrics_labels.push_back(text);
        }
      }
    }
    if (parsed.count("metrics-label-limit")) {
      const std::string text = parsed["metrics-label-limit"].as<std::string>();
      auto limit = parse_number<size_t>("metrics-label-limit", text);
      if (!limit) return std::move(limit).take_error();
      if (*limit < 1 || *limit > kMaxLabelLimit) {
        return usage_error("--metrics-label-limit: '" + text + "' must be from 1 to " +
                           std::to_string(kMaxLabelLimit));
      }
      if (options.metrics_labels.empty()) return usage_error("--metrics-label-limit needs --metrics-label");
      options.metrics_label_limit = *limit;
    }
    if (parsed.count("aggregate")) {
      const std::string text = parsed["aggregate"].as<std::string>();
      if (text == "auto") {
        options.aggregate = Options::Aggregate::automatic;
      } else if (text == "kernel") {
        options.aggregate = Options::Aggregate::kernel;
      } else if (text == "host") {
        options.aggregate = Options::Aggregate::host;
      } else {
        return usage_error("--aggregate: '" + text + "' is not one of auto, kernel, host");
      }
    }
    const bool v4 = parsed.count("ipv4") > 0;
    const bool v6 = parsed.count("ipv6") > 0;
    if (v4 && v6) return usage_error("-4 and -6 exclude each other (give neither to trace both)");
    options.filters.family = v4 ? 4 : v6 ? 6 : 0;

    if (parsed.count("duration")) {
      const std::string text = parsed["duration"].as<std::string>();
      auto seconds = parse_number<double>("duration", text);
      if (!seconds) return std::move(seconds).take_error();
      if (!std::isfinite(*seconds) || *seconds <= 0) {
        return usage_error("--duration: '" + text + "' must be a positive number of seconds");
      }
      options.duration_seconds = *seconds;
    }
    if (parsed.count("interval")) {
      const std::string text = parsed["interval"].as<std::string>();
      auto seconds = parse_number<double>("interval", text);
      if (!seconds) return std::move(seconds).take_error();
      if (!std::isfinite(*seconds) || *seconds < 0.1) {
        return usage_error("--interval: '" + text + "' must be a number of seconds, at least 0.1");
      }
      options.interval_seconds = *seconds;
    }
    options.accumulate = parsed.count("accumulate") > 0;
    if (parsed.count("count")) {
      const std::string text = parsed["count"].as<std::string>();
      auto count = parse_number<uint64_t>("count", text);
      if (!count) return std::move(count).take_error();
      if (*count == 0) return usage_error("--count: must be at least 1");
      options.count = *count;
    }
    if (parsed.count("buffer-pages")) {
      const std::string text = parsed["buffer-pages"].as<std::string>();
      auto pages = parse_number<int>("buffer-pages", text);
      if (!pages) return std::move(pages).take_error();
      if (*pages <= 0 || (*pages & (*pages - 1)) != 0 || *pages > kMaxBufferPages) {
        return usage_error("--buffer-pages: '" + text + "' must be a power of two from 1 to " +
                           std::to_string(kMaxBufferPages));
      }
      options.buffer_pages = *pages;
    }
  } catch (const cxxopts::exceptions::no_such_option& e) {
    return usage_error(unknown_option_message(e.what()));
  } catch (const cxxopts::exceptions::exception& e) {
    return usage_error(e.what());
  }
  if (options.program && options.program_file) {
    return usage_error("--program and --program-file exclude each other");
  }
  if (!options.program && !options.program_file) {
    return usage_error("no program given: use --program NAME or --program-file FILE (see --help, --list)");
  }
  if (options.watch && !options.program_file) return usage_error("--watch needs --program-file FILE");
  if (options.watch && (options.check || options.print_source)) {
    return usage_error("--watch runs a program; it does not go with --check or --print-source");
  }
  if (options.check && options.print_source) return usage_error("--check and --print-source exclude each other");
  if ((options.interval_seconds || options.accumulate) && (options.check || options.print_source)) {
    return usage_error(std::string(options.interval_seconds ? "--interval" : "--accumulate") +
                       " reads a running program's tables; it does not go with --check or --print-source");
  }
  if (!options.metrics_labels.empty() && !options.metrics) return usage_error("--metrics-label needs --metrics ADDR");
  if (options.web_config && !options.metrics) return usage_error("--web-config needs --metrics ADDR");
  if (options.metrics && (options.check || options.print_source)) {
    return usage_error("--metrics serves a running program; it does not go with --check or --print-source");
  }
  // Events that go nowhere are a mistake, not a mode.
  if (options.output == Options::Output::none && !options.metrics && !options.record_raw) {
    return usage_error("--output none needs --metrics ADDR (or --record-raw FILE): the events would go nowhere");
  }
  // --check and --print-source take --aggregate kernel alone: they compile
  // (and verify) the aggregating variant.
  const bool runs = !options.check && !options.print_source;
  if (options.aggregate != Options::Aggregate::automatic && !options.metrics && runs) {
    return usage_error("--aggregate chooses where --metrics counts; it needs --metrics ADDR");
  }
  // In-kernel aggregation sends no event to the host: whatever needs one
  // there cannot go with it.
  if (options.aggregate == Options::Aggregate::kernel && runs) {
    if (options.output != Options::Output::none) {
      return usage_error("--aggregate kernel: the events never reach the host, so there are no event lines; "
                         "add --output none");
    }
    if (const std::string option = option_needing_events_in_host(options); !option.empty()) {
      return usage_error("--aggregate kernel: " + option + " needs the events in the host (use --aggregate host)");
    }
  }
  const FilterSpec& f = options.filters;
  if (f.sport) options.filters_given.push_back("sport");
  if (f.dport) options.filters_given.push_back("dport");
  if (f.family != 0) options.filters_given.push_back("family");
  if (f.pid) options.filters_given.push_back("pid");
  if (f.min_us) options.filters_given.push_back("min-us");
  if (f.no_failures) options.filters_given.push_back("no-failures");
  return options;
}

std::string option_needing_events_in_host(const Options& options) {
  if (!options.metrics_labels.empty()) return "--metrics-label";  // folding ports needs each event's port
  if (options.count) return "--count";
  if (options.record_raw) return "--record-raw";
  if (options.buffer != Options::Buffer::automatic) return "--buffer";
  return "";
}

}  // namespace tcptrace
