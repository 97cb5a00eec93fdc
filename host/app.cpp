#include "app.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <memory>

#include <nlohmann/json.hpp>

#include "bcc_backend.h"
#include "diagnostics.h"
#include "event_output.h"
#include "filter_macros.h"
#include "format_hints.h"
#include "kernel_headers.h"
#include "kernel_probe.h"
#include "program_annotations.h"
#include "program_source.h"
#include "system_checks.h"
#include "wall_clock.h"

namespace tcptrace {
namespace {

volatile sig_atomic_t g_stop_signal = 0;

void on_stop_signal(int signal) { g_stop_signal = signal; }

// SIGINT/SIGTERM only set a flag: the poll loop sees poll() fail with EINTR
// (no SA_RESTART) and ends the run through the normal teardown. SIGPIPE is
// ignored so a closed stdout shows up as EPIPE from write().
class SignalHandlers {
 public:
  SignalHandlers() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &old_pipe_);
  }
  ~SignalHandlers() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGPIPE, &old_pipe_, nullptr);
  }
  SignalHandlers(const SignalHandlers&) = delete;
  SignalHandlers& operator=(const SignalHandlers&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
  struct sigaction old_pipe_ {};
};

std::string cflag_for(const UserMacro& macro) {
  return "-D" + macro.name + (macro.value ? "=" + *macro.value : "");
}

struct CompiledWithHeaders {
  bcc::Program program;
  std::optional<MergedHeaderTree> merged_headers;
};

// clang names the program "/virtual/main.c"; anything else it complains
// about is a header.
bool blames_the_program(const std::string& diagnostics) {
  return diagnostics.find("/virtual/main.c:") != std::string::npos ||
         diagnostics.find("bpf: ") != std::string::npos;
}

void report_diagnostics(const std::string& diagnostics, const std::string& program_path) {
  size_t start = 0;
  while (start < diagnostics.size()) {
    size_t end = diagnostics.find('\n', start);
    if (end == std::string::npos) end = diagnostics.size();
    std::string line = diagnostics.substr(start, end - start);
    if (size_t at = line.find("/virtual/main.c"); at != std::string::npos) {
      line.replace(at, std::string("/virtual/main.c").size(), program_path);
    }
    if (!line.empty()) {
      line.push_back('\n');
      ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
      (void)ignored;
    }
    start = end + 1;
  }
}

// Compiles against the chosen headers. When a fallback header tree fails
// inside the headers rather than in the program, the next installed tree is
// tried: a tree newer than what this libbcc's clang understands fails there
// (BCC 0.26 with Linux 6.12's: `struct bpf_wq` incomplete) while an older one
// works.
Result<CompiledWithHeaders> compile_with_headers(const ProgramSource& source, const std::vector<std::string>& cflags,
                                                 const HeaderChoice& choice, const std::string& running_release) {
  std::vector<std::optional<HeaderTree>> trees = {choice.tree};
  for (const auto& alternative : choice.alternatives) trees.emplace_back(alternative);
  for (size_t i = 0; i < trees.size(); ++i) {
    std::optional<MergedHeaderTree> merged;
    if (trees[i]) {
      auto created = MergedHeaderTree::create(*trees[i]);
      if (!created) return std::move(created).take_error();
      merged.emplace(std::move(created).value());
    }
    std::string diagnostics;
    auto program = bcc::Program::compile(source.text, cflags,
                                         merged ? std::optional<std::string>(merged->path()) : std::nullopt,
                                         diagnostics);
    if (program) {
      // Warnings about the program itself are worth showing; header noise is not.
      if (blames_the_program(diagnostics)) report_diagnostics(diagnostics, source.path);
      return CompiledWithHeaders{std::move(program).value(), std::move(merged)};
    }
    const bool last = i + 1 == trees.size();
    if (blames_the_program(diagnostics) || last || choice.match != HeaderMatch::fallback) {
      report_diagnostics(diagnostics, source.path);
      return runtime_error(source.path + " did not compile (diagnostics above)");
    }
    HeaderChoice next{HeaderMatch::fallback, trees[i + 1], {}};
    report("kernel headers " + trees[i]->release + " do not compile with this BCC; " +
           describe_header_choice(next, running_release));
  }
  return runtime_error(source.path + " did not compile");
}

// --check: the attach plan and each output table's decoded layout, as one
// JSON object on stdout.
void print_check_report(const std::string& program, std::optional<AttachMethod> method,
                        const std::vector<ProbeSpec>& plan, const std::vector<bcc::OutputTable>& tables,
                        const std::vector<std::optional<EventDecoder>>& decoders) {
  nlohmann::json report = {{"program", program}};
  report["attach_method"] = method ? nlohmann::json(std::string(method_name(*method))) : nlohmann::json(nullptr);
  report["probes"] = nlohmann::json::array();
  for (const ProbeSpec& probe : plan) {
    nlohmann::json entry = {{"kind", std::string(kind_name(probe.kind))}, {"function", probe.function}};
    entry["target"] = probe.kind == ProbeKind::tracepoint ? probe.category + ":" + probe.target : probe.target;
    report["probes"].push_back(entry);
  }
  report["outputs"] = nlohmann::json::array();
  for (size_t i = 0; i < tables.size(); ++i) {
    nlohmann::json table = {{"table", tables[i].name},
                            {"kind", tables[i].kind == bcc::OutputKind::ring_buffer ? "ring_buffer" : "perf_buffer"}};
    nlohmann::json fields = nlohmann::json::array();
    if (decoders[i]) {
      table["size"] = decoders[i]->layout().size;
      for (const FieldLayout& field : decoders[i]->layout().fields) {
        fields.push_back({{"name", field.name}, {"type", field.type}, {"offset", field.offset}, {"size", field.size()}});
      }
    }
    table["fields"] = fields;
    report["outputs"].push_back(table);
  }
  const std::string text = report.dump() + "\n";
  ssize_t ignored = ::write(STDOUT_FILENO, text.data(), text.size());
  (void)ignored;
}

double monotonic_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

Status run(const Options& options) {
  if (Status s = check_privileges(); !s) return s;
  std::string tracefs_note;
  if (Status s = ensure_tracefs(tracefs_note); !s) return s;
  if (!tracefs_note.empty()) report(tracefs_note);

  auto locations = find_program_locations(options.programs_dir);
  if (!locations) return std::move(locations).take_error();
  auto source = read_named_program(*locations, *options.program);
  if (!source) return std::move(source).take_error();
  auto hints = parse_format_hints(source->text);
  if (!hints) return runtime_error(source->path + ": " + hints.error().message);
  auto annotations = parse_program_annotations(source->text);
  if (!annotations) return runtime_error(source->path + ": " + annotations.error().message);
  for (const std::string& filter : options.filters_given) {
    if (!annotations->honours(filter)) {
      return usage_error("--" + std::string(filter == "family" ? "ipv4/--ipv6" : filter) + ": program " +
                         *options.program + " does not support this filter");
    }
  }

  const FilterPlan filters = build_filter_plan(options.filters);
  std::vector<std::string> cflags = {"-I" + locations->include_dir};
  cflags.insert(cflags.end(), filters.cflags.begin(), filters.cflags.end());
  for (const auto& macro : options.macros) cflags.push_back(cflag_for(macro));

  // Programs with variants get the method chosen from what the kernel can
  // do. --check with an explicit method skips that test: it only compiles
  // and verifies, which works even where attaching would not.
  std::optional<AttachMethod> method;
  if (!annotations->attach_methods.empty()) {
    if (options.check && options.attach) {
      auto chosen = choose_attach_method(options.attach, annotations->attach_methods,
                                         KernelCapabilities{{true, ""}, {true, ""}, {true, ""}});
      if (!chosen) return std::move(chosen).take_error();
      method = *chosen;
    } else {
      auto chosen = choose_attach_method(options.attach, annotations->attach_methods, probe_kernel_capabilities());
      if (!chosen) return std::move(chosen).take_error();
      method = *chosen;
    }
    cflags.push_back("-D" + method_macro(*method) + "=1");
  } else if (options.attach) {
    return usage_error("--attach: program " + *options.program + " has no attach variants");
  }

  const HeaderSearchPaths search = default_header_search_paths();
  auto headers = choose_kernel_headers(search, options.kernel_headers);
  if (!headers) return std::move(headers).take_error();
  if (std::string line = describe_header_choice(*headers, search.running_release); !line.empty()) report(line);

  auto compiled = compile_with_headers(*source, cflags, *headers, search.running_release);
  if (!compiled) return std::move(compiled).take_error();
  bcc::Program& program = compiled->program;

  // Decoders, one per output table, from the layout BCC recorded.
  const WallClock clock;
  const std::vector<bcc::OutputTable> tables = program.output_tables();
  std::vector<std::optional<EventDecoder>> decoders;
  std::vector<std::string> table_names;
  size_t decodable = 0;
  for (const auto& table : tables) {
    table_names.push_back(table.name);
    if (table.field_descriptions.empty()) {
      decoders.emplace_back();
      continue;
    }
    size_t with_fields = 0;
    for (const auto& t : tables) with_fields += t.field_descriptions.empty() ? 0 : 1;
    auto layout = parse_event_layout(table.field_descriptions);
    if (!layout) return runtime_error(source->path + ": table '" + table.name + "': " + layout.error().message);
    DecoderOptions decoder_options;
    if (with_fields > 1) decoder_options.event_name = table.name;
    auto decoder = EventDecoder::make(std::move(layout).value(), *hints, table.name, decoder_options, clock);
    if (!decoder) return runtime_error(source->path + ": " + decoder.error().message);
    decoders.emplace_back(std::move(decoder).value());
    ++decodable;
  }
  if (decodable == 0) {
    return runtime_error(source->path +
                         ": the program submits no struct to a BPF_PERF_OUTPUT or BPF_RINGBUF_OUTPUT table, "
                         "so there is nothing to print");
  }

  const std::vector<ProbeSpec> plan = attach_plan(program.functions());
  if (plan.empty()) return runtime_error(source->path + ": the program declares no probe to attach");
  std::vector<bcc::LoadedFunction> loaded;
  for (const ProbeSpec& probe : plan) {
    auto function = program.load(probe);
    if (!function) return std::move(function).take_error();
    loaded.push_back(std::move(function).value());
  }

  const std::string method_text = method ? " (attach: " + std::string(method_name(*method)) + ")" : "";
  if (options.check) {
    print_check_report(*options.program, method, plan, tables, decoders);
    report("check passed: program " + *options.program + method_text + " compiled and " +
           std::to_string(loaded.size()) + " probe" + (loaded.size() == 1 ? "" : "s") +
           " passed the verifier; nothing attached");
    return {};
  }

  EventOutput output(STDOUT_FILENO, std::move(decoders), table_names, options.count);
  auto reader = bcc::OutputReader::open(tables, output, options.buffer_pages);
  if (!reader) return std::move(reader).take_error();

  SignalHandlers signals;
  g_stop_signal = 0;
  std::vector<std::unique_ptr<bcc::Attachment>> attachments;
  std::string probe_list;
  for (const bcc::LoadedFunction& function : loaded) {
    auto attachment = bcc::Attachment::attach(function);
    if (!attachment) return std::move(attachment).take_error();
    attachments.push_back(std::move(attachment).value());
    probe_list += (probe_list.empty() ? "" : ", ") + describe(function.probe());
  }
  bcc::Program::release_compiler_memory();
  report("ready: program " + *options.program + method_text + ", " + std::to_string(attachments.size()) + " probe" +
         (attachments.size() == 1 ? "" : "s") + " attached (" + probe_list + ")");

  // Skipped runs are read from the kernel about once a second.
  std::vector<uint64_t> misses_seen(loaded.size(), 0);
  auto check_recursion_misses = [&]() {
    uint64_t total = 0;
    for (size_t i = 0; i < loaded.size(); ++i) {
      const uint64_t now = loaded[i].recursion_misses().value_or(0);
      if (now > misses_seen[i]) {
        report("kernel skipped " + std::to_string(now - misses_seen[i]) + " runs of " +
               describe(loaded[i].probe()) +
               " (recursion_misses: the program was already running on that CPU); their events are lost");
        misses_seen[i] = now;
      }
      total += misses_seen[i];
    }
    return total;
  };

  const double started = monotonic_seconds();
  double last_miss_check = started;
  constexpr int kPollMs = 100;
  bool polling_failed = false;
  while (g_stop_signal == 0 && !output.limit_reached() && !output.reader_gone()) {
    if (options.duration_seconds && monotonic_seconds() - started >= *options.duration_seconds) break;
    if (!(*reader)->poll(kPollMs)) {
      polling_failed = true;
      break;
    }
    output.flush();
    if (monotonic_seconds() - last_miss_check >= 1.0) {
      check_recursion_misses();
      last_miss_check = monotonic_seconds();
    }
  }

  // Teardown: detach first so no new events arrive, then drain what the
  // buffers still hold, then flush.
  attachments.clear();
  (*reader)->drain();
  output.flush();
  const uint64_t skipped = check_recursion_misses();
  reader->reset();

  std::string summary = std::to_string(output.events()) + " events, " + std::to_string(output.lost()) +
                        " lost (buffer), " + std::to_string(skipped) + " skipped runs (recursion_misses)";
  if (output.truncated() > 0) summary += ", " + std::to_string(output.truncated()) + " truncated samples";
  if (g_stop_signal != 0) summary += "; stopped by " + std::string(g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
  report(summary);
  if (polling_failed) return runtime_error("polling the event buffers failed");
  return {};
}

}  // namespace tcptrace
