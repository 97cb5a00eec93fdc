#include "options.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace tcptrace {
namespace {

// Passes when `needle` occurs in `text`; prints both otherwise.
::testing::AssertionResult Contains(const std::string& text, const std::string& needle) {
  if (text.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << needle << "' not found in: " << text;
}

// parse_options with argv[0] supplied.
Result<Options> parse(std::initializer_list<const char*> args) {
  std::vector<const char*> argv{"tcptrace-bcc"};
  argv.insert(argv.end(), args.begin(), args.end());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

std::vector<PortRange> ranges_of(const std::optional<PortSet>& set) {
  if (!set) return {};
  return set->ranges();
}

TEST(OptionsTest, RealisticCommandLine) {
  auto options = parse({"--program", "states", "--sport", "80", "-6", "--dport", "443,8443"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(options->program, "states");
  ASSERT_TRUE(options->filters.sport.has_value());
  EXPECT_EQ(ranges_of(options->filters.sport), (std::vector<PortRange>{{80, 80}}));
  ASSERT_TRUE(options->filters.dport.has_value());
  EXPECT_EQ(ranges_of(options->filters.dport), (std::vector<PortRange>{{443, 443}, {8443, 8443}}));
  EXPECT_EQ(options->filters.family, 6);
  EXPECT_TRUE(options->macros.empty());
  EXPECT_FALSE(options->duration_seconds.has_value());
  EXPECT_FALSE(options->count.has_value());
  EXPECT_FALSE(options->kernel_headers.has_value());
  EXPECT_FALSE(options->programs_dir.has_value());
  EXPECT_EQ(options->buffer_pages, 64);
  EXPECT_FALSE(options->help);
  EXPECT_FALSE(options->version);
  // Filters the command line has no option for stay off.
  EXPECT_FALSE(options->filters.pid.has_value());
  EXPECT_FALSE(options->filters.min_us.has_value());
  EXPECT_FALSE(options->filters.no_failures);
}

TEST(OptionsTest, TablesIntervalAccumulateAndTextOutput) {
  auto options = parse({"--program", "states", "--interval", "2.5", "--accumulate", "--output", "text"});
  ASSERT_TRUE(options) << options.error().message;
  EXPECT_EQ(options->interval_seconds, 2.5);
  EXPECT_TRUE(options->accumulate);
  EXPECT_EQ(options->output, Options::Output::text);
  auto defaults = parse({"--program", "states"});
  ASSERT_TRUE(defaults);
  EXPECT_FALSE(defaults->interval_seconds);
  EXPECT_FALSE(defaults->accumulate);
}

TEST(OptionsTest, DefaultsWithOnlyProgram) {
  auto options = parse({"--program", "states"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(options->program, "states");
  EXPECT_FALSE(options->filters.sport.has_value());
  EXPECT_FALSE(options->filters.dport.has_value());
  EXPECT_EQ(options->filters.family, 0);
  EXPECT_TRUE(options->macros.empty());
  EXPECT_EQ(options->buffer_pages, 64);
}

TEST(OptionsTest, EveryValueOption) {
  auto options = parse({"--program", "states", "--programs-dir", "/opt/progs", "--kernel-headers",
                        "/usr/src/linux-headers-6.1.0-56-cloud-amd64", "--duration", "2.5", "--count", "10",
                        "--buffer-pages", "128", "-4"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(options->programs_dir, "/opt/progs");
  EXPECT_EQ(options->kernel_headers, "/usr/src/linux-headers-6.1.0-56-cloud-amd64");
  EXPECT_EQ(options->duration_seconds, 2.5);
  EXPECT_EQ(options->count, 10u);
  EXPECT_EQ(options->buffer_pages, 128);
  EXPECT_EQ(options->filters.family, 4);
}

TEST(OptionsTest, EqualsSignForm) {
  auto options = parse({"--program=states", "--sport=80-90", "--dport=22", "--count=3"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(options->program, "states");
  EXPECT_EQ(ranges_of(options->filters.sport), (std::vector<PortRange>{{80, 90}}));
  EXPECT_EQ(ranges_of(options->filters.dport), (std::vector<PortRange>{{22, 22}}));
  EXPECT_EQ(options->count, 3u);
}

TEST(OptionsTest, ShortFormsLAndD) {
  auto options = parse({"--program", "states", "-L", "8000-8100,22", "-D", "443"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(ranges_of(options->filters.sport), (std::vector<PortRange>{{22, 22}, {8000, 8100}}));
  EXPECT_EQ(ranges_of(options->filters.dport), (std::vector<PortRange>{{443, 443}}));
  EXPECT_TRUE(options->macros.empty());
}

TEST(OptionsTest, ShortFormsWithAttachedValue) {
  auto options = parse({"--program", "states", "-L80", "-D443", "-DTHRESHOLD_US=500"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(ranges_of(options->filters.sport), (std::vector<PortRange>{{80, 80}}));
  EXPECT_EQ(ranges_of(options->filters.dport), (std::vector<PortRange>{{443, 443}}));
  ASSERT_EQ(options->macros.size(), 1u);
  EXPECT_EQ(options->macros[0].name, "THRESHOLD_US");
  EXPECT_EQ(options->macros[0].value, "500");
}

TEST(OptionsTest, ShortDWithPortListIsDport) {
  auto options = parse({"--program", "states", "-D", "443,8443,9000-9010"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(ranges_of(options->filters.dport),
            (std::vector<PortRange>{{443, 443}, {8443, 8443}, {9000, 9010}}));
  EXPECT_TRUE(options->macros.empty());
}

TEST(OptionsTest, DashDMixesPortListAndMacros) {
  auto options = parse({"--program", "states", "-D", "THRESHOLD_US=500", "-D", "443", "-D", "FOO"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(ranges_of(options->filters.dport), (std::vector<PortRange>{{443, 443}}));
  ASSERT_EQ(options->macros.size(), 2u);
  EXPECT_EQ(options->macros[0].name, "THRESHOLD_US");
  EXPECT_EQ(options->macros[0].value, "500");
  EXPECT_EQ(options->macros[1].name, "FOO");
  EXPECT_FALSE(options->macros[1].value.has_value());
}

TEST(OptionsTest, MacroValuesAreKeptVerbatim) {
  // A value may hold commas, '=' and be empty: it is C text, not a list.
  auto options = parse({"--program", "states", "-D", "PAIR=1,2", "-D", "EQ=a=b", "-D", "EMPTY=", "-D",
                        "_lower_1"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  ASSERT_EQ(options->macros.size(), 4u);
  EXPECT_EQ(options->macros[0].name, "PAIR");
  EXPECT_EQ(options->macros[0].value, "1,2");
  EXPECT_EQ(options->macros[1].name, "EQ");
  EXPECT_EQ(options->macros[1].value, "a=b");
  EXPECT_EQ(options->macros[2].name, "EMPTY");
  EXPECT_EQ(options->macros[2].value, std::optional<std::string>(""));
  EXPECT_EQ(options->macros[3].name, "_lower_1");
  EXPECT_FALSE(options->macros[3].value.has_value());
  EXPECT_FALSE(options->filters.dport.has_value());
}

TEST(OptionsTest, MacroWithCommaNextToPortList) {
  auto options = parse({"--program", "states", "-D", "LIST=1,2,3", "-D", "80,443"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(ranges_of(options->filters.dport), (std::vector<PortRange>{{80, 80}, {443, 443}}));
  ASSERT_EQ(options->macros.size(), 1u);
  EXPECT_EQ(options->macros[0].name, "LIST");
  EXPECT_EQ(options->macros[0].value, "1,2,3");
}

TEST(OptionsTest, HelpAndVersionNeedNoProgram) {
  for (const char* flag : {"--help", "-h", "--version"}) {
    SCOPED_TRACE(flag);
    auto options = parse({flag});
    ASSERT_TRUE(options.ok()) << options.error().message;
    EXPECT_FALSE(options->program.has_value());
    const bool is_version = std::string(flag) == "--version";
    EXPECT_EQ(options->help, !is_version);
    EXPECT_EQ(options->version, is_version);
  }
}

TEST(OptionsTest, HelpWinsOverOtherwiseBadValues) {
  auto options = parse({"--help", "--sport", "abc"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_TRUE(options->help);
}

TEST(OptionsTest, DurationFraction) {
  auto options = parse({"--program", "states", "--duration", "0.5"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  ASSERT_TRUE(options->duration_seconds.has_value());
  EXPECT_DOUBLE_EQ(*options->duration_seconds, 0.5);
}

TEST(OptionsTest, BufferPagesPowersOfTwo) {
  for (const char* pages : {"1", "2", "64", "128", "1024"}) {
    SCOPED_TRACE(pages);
    auto options = parse({"--program", "states", "--buffer-pages", pages});
    ASSERT_TRUE(options.ok()) << options.error().message;
    EXPECT_EQ(options->buffer_pages, std::stoi(pages));
  }
}

// Buffer pages are pinned kernel memory, per CPU: capped at 1024 (4 MiB
// per CPU with 4 KiB pages).
TEST(OptionsTest, BufferPagesAboveTheCapAreAUsageError) {
  for (const char* pages : {"2048", "65536", "1048576"}) {
    SCOPED_TRACE(pages);
    auto options = parse({"--program", "states", "--buffer-pages", pages});
    ASSERT_FALSE(options.ok());
    EXPECT_EQ(options.error().exit_code, ExitCode::usage);
    EXPECT_EQ(options.error().message,
              std::string("--buffer-pages: '") + pages + "' must be a power of two from 1 to 1024");
  }
}

TEST(OptionsTest, LargestCount) {
  auto options = parse({"--program", "states", "--count", "18446744073709551615"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  EXPECT_EQ(options->count, UINT64_MAX);
}

TEST(OptionsTest, MetricsOptions) {
  auto options = parse({"--program", "connlat", "--metrics", "0.0.0.0:9464", "--output", "none", "--metrics-label",
                        "dport", "--metrics-label-limit", "25"});
  ASSERT_TRUE(options.ok()) << options.error().message;
  ASSERT_TRUE(options->metrics.has_value());
  EXPECT_EQ(options->metrics->host, "0.0.0.0");
  EXPECT_EQ(options->metrics->port, 9464);
  EXPECT_EQ(options->output, Options::Output::none);
  EXPECT_EQ(options->metrics_labels, std::vector<std::string>{"dport"});
  EXPECT_EQ(options->metrics_label_limit, 25u);
}

TEST(OptionsTest, MetricsDefaults) {
  auto options = parse({"--program", "connlat"});
  ASSERT_TRUE(options.ok());
  EXPECT_FALSE(options->metrics.has_value());
  EXPECT_EQ(options->output, Options::Output::json);
  EXPECT_TRUE(options->metrics_labels.empty());
  EXPECT_EQ(options->metrics_label_limit, kDefaultLabelLimit);
  auto raw_only = parse({"--program", "connlat", "--output", "none", "--record-raw", "/tmp/x"});
  EXPECT_TRUE(raw_only.ok()) << "recording raw samples without JSON is a use of --output none";
}

TEST(OptionsTest, AggregateChoices) {
  auto automatic = parse({"--program", "states", "--metrics", "127.0.0.1:0", "--output", "none"});
  ASSERT_TRUE(automatic.ok());
  EXPECT_EQ(automatic->aggregate, Options::Aggregate::automatic);
  auto kernel = parse({"--program", "states", "--metrics", "127.0.0.1:0", "--output", "none", "--aggregate", "kernel"});
  ASSERT_TRUE(kernel.ok()) << kernel.error().message;
  EXPECT_EQ(kernel->aggregate, Options::Aggregate::kernel);
  auto host = parse({"--program", "states", "--metrics", "127.0.0.1:0", "--aggregate", "host"});
  ASSERT_TRUE(host.ok()) << host.error().message;
  EXPECT_EQ(host->aggregate, Options::Aggregate::host);
  // --check and --print-source build the aggregating variant without serving anything.
  auto check = parse({"--program", "connlat", "--check", "--aggregate", "kernel"});
  ASSERT_TRUE(check.ok()) << check.error().message;
  EXPECT_EQ(check->aggregate, Options::Aggregate::kernel);
  EXPECT_TRUE(parse({"--program", "connlat", "--print-source", "--aggregate", "kernel"}).ok());
}

TEST(OptionsTest, WebConfigIsKeptForTheServer) {
  auto parsed = parse({"--program", "states", "--metrics", "127.0.0.1:0", "--web-config", "/etc/tcptrace/web.yml"});
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->web_config, "/etc/tcptrace/web.yml");
}

TEST(OptionsTest, CacheOptions) {
  auto defaults = parse({"--program", "states"});
  ASSERT_TRUE(defaults.ok()) << defaults.error().message;
  EXPECT_FALSE(defaults->cache_dir);
  EXPECT_FALSE(defaults->no_cache);
  auto elsewhere = parse({"--program", "states", "--cache-dir", "/var/tmp/tcptrace-cache"});
  ASSERT_TRUE(elsewhere.ok()) << elsewhere.error().message;
  EXPECT_EQ(elsewhere->cache_dir, "/var/tmp/tcptrace-cache");
  auto off = parse({"--program", "states", "--no-cache"});
  ASSERT_TRUE(off.ok()) << off.error().message;
  EXPECT_TRUE(off->no_cache);
}

TEST(OptionsTest, UsageTextNamesTheOptions) {
  const std::string text = usage_text();
  for (const char* option : {"--program", "--programs-dir", "--sport", "--dport", "--duration", "--count",
                             "--kernel-headers", "--cache-dir", "--no-cache", "--buffer-pages", "--metrics", "--web-config", "--help", "--version", "-4",
                             "-6"}) {
    EXPECT_TRUE(Contains(text, option));
  }
}

struct BadCase {
  std::vector<const char*> args;
  std::string expected_in_message;  // names the option at fault
};

void PrintTo(const BadCase& c, std::ostream* os) {
  *os << "{";
  for (const char* a : c.args) *os << " '" << a << "'";
  *os << " }";
}

class OptionsUsageErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(OptionsUsageErrorTest, IsAUsageErrorNamingTheOption) {
  const BadCase& c = GetParam();
  std::vector<const char*> argv{"tcptrace-bcc"};
  argv.insert(argv.end(), c.args.begin(), c.args.end());
  auto options = parse_options(static_cast<int>(argv.size()), argv.data());
  ASSERT_FALSE(options.ok());
  EXPECT_EQ(options.error().exit_code, ExitCode::usage);
  EXPECT_TRUE(Contains(options.error().message, c.expected_in_message));
  EXPECT_EQ(options.error().message.find('\n'), std::string::npos) << "one line";
}

INSTANTIATE_TEST_SUITE_P(
    OptionsBadCommandLines, OptionsUsageErrorTest,
    ::testing::Values(
        // ports
        BadCase{{"--program", "states", "--sport", "70000"}, "--sport"},
        BadCase{{"--program", "states", "--sport", "abc"}, "--sport"},
        BadCase{{"--program", "states", "--sport", ""}, "--sport"},
        BadCase{{"--program", "states", "--sport", "10-5"}, "--sport"},
        BadCase{{"--program", "states", "--sport", "80,"}, "--sport"},
        BadCase{{"--program", "states", "-L", "0"}, "--sport"},
        BadCase{{"--program", "states", "--dport", "0"}, "--dport"},
        BadCase{{"--program", "states", "--dport", "65536"}, "--dport"},
        BadCase{{"--program", "states", "--dport", "443,"}, "--dport"},
        BadCase{{"--program", "states", "--dport", ""}, "-D"},
        // -D
        BadCase{{"--program", "states", "-D", "1abc"}, "--dport"},
        BadCase{{"--program", "states", "-D", "a-b=1"}, "a-b"},
        BadCase{{"--program", "states", "-D", "=1"}, "-D"},
        BadCase{{"--program", "states", "-D", "FOO BAR"}, "-D"},
        BadCase{{"--program", "states", "-D", "FILTER_PID=1"}, "FILTER_PID"},
        BadCase{{"--program", "states", "-D", "FILTER_SPORT_MODE"}, "FILTER_SPORT_MODE"},
        BadCase{{"--program", "states", "-D", "TCPTRACE_X"}, "TCPTRACE_X"},
        BadCase{{"--program", "states", "-D", "FOO=1", "-D", "FOO=2"}, "FOO"},
        BadCase{{"--program", "states", "-D", "FOO", "-D", "FOO"}, "FOO"},
        BadCase{{"--program", "states", "-D", "80", "-D", "443"}, "--dport"},
        BadCase{{"--program", "states", "--dport", "80", "-D", "443"}, "--dport"},
        // family
        BadCase{{"--program", "states", "-4", "-6"}, "-4"},
        BadCase{{"--program", "states", "-6", "-4"}, "-6"},
        // count
        BadCase{{"--program", "states", "--no-cache", "--cache-dir", "/var/tmp/c"}, "--no-cache"},
        BadCase{{"--program", "states", "--cache-dir", ""}, "--cache-dir"},
        BadCase{{"--program", "states", "--cache-dir", "/a", "--cache-dir", "/b"}, "--cache-dir"},
        BadCase{{"--program", "states", "--no-cache", "--no-cache"}, "--no-cache"},
        BadCase{{"--program", "states", "--count", "0"}, "--count"},
        BadCase{{"--program", "states", "--count", "-1"}, "--count"},
        BadCase{{"--program", "states", "--count", "1.5"}, "--count"},
        BadCase{{"--program", "states", "--count", "abc"}, "--count"},
        BadCase{{"--program", "states", "--count", ""}, "--count"},
        BadCase{{"--program", "states", "--count", "99999999999999999999999"}, "--count"},
        // duration
        BadCase{{"--program", "states", "--duration", "-3"}, "--duration"},
        BadCase{{"--program", "states", "--duration", "0"}, "--duration"},
        BadCase{{"--program", "states", "--duration", "abc"}, "--duration"},
        BadCase{{"--program", "states", "--duration", "1s"}, "--duration"},
        BadCase{{"--program", "states", "--duration", "inf"}, "--duration"},
        BadCase{{"--program", "states", "--duration", "nan"}, "--duration"},
        BadCase{{"--program", "states", "--duration", ""}, "--duration"},
        // buffer pages
        BadCase{{"--program", "states", "--buffer-pages", "3"}, "--buffer-pages"},
        BadCase{{"--program", "states", "--buffer-pages", "0"}, "--buffer-pages"},
        BadCase{{"--program", "states", "--buffer-pages", "-64"}, "--buffer-pages"},
        BadCase{{"--program", "states", "--buffer-pages", "131072"}, "--buffer-pages"},
        BadCase{{"--program", "states", "--buffer-pages", "many"}, "--buffer-pages"},
        // metrics
        BadCase{{"--program", "states", "--metrics", "localhost:9464"}, "--metrics"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1"}, "--metrics"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:65536"}, "--metrics"},
        BadCase{{"--program", "states", "--metrics", ":1", "--metrics", ":2"}, "--metrics"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--check"}, "--metrics"},
        BadCase{{"--program", "states", "--output", "yaml"}, "--output"},
        BadCase{{"--program", "states", "--output", "none"}, "--output none"},
        BadCase{{"--program", "states", "--metrics-label", "dport"}, "--metrics-label"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--metrics-label", "d-port"}, "--metrics-label"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--metrics-label-limit", "5"},
                "--metrics-label-limit"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--metrics-label", "dport",
                 "--metrics-label-limit", "0"},
                "--metrics-label-limit"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--metrics-label", "dport",
                 "--metrics-label-limit", "101"},
                "--metrics-label-limit"},
        // tables
        BadCase{{"--program", "states", "--interval", "0"}, "--interval: '0' must be a number of seconds, at least 0.1"},
        BadCase{{"--program", "states", "--interval", "x"}, "--interval: 'x' is not a number"},
        BadCase{{"--program", "states", "--interval", "1", "--check"}, "--interval reads a running program's tables"},
        BadCase{{"--program", "states", "--output", "csv"}, "--output: 'csv' is not one of json, text, none"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--output", "text", "--aggregate", "kernel"},
                "--aggregate kernel: the events never reach the host"},
        // --web-config
        BadCase{{"--program", "states", "--web-config", "web.yml"}, "--web-config needs --metrics ADDR"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--web-config", "a.yml", "--web-config", "b.yml"},
                "--web-config given more than once"},
        // --aggregate
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--output", "none", "--aggregate", "bpf"},
                "--aggregate: 'bpf' is not one of auto, kernel, host"},
        BadCase{{"--program", "states", "--aggregate", "host"}, "--aggregate chooses where --metrics counts"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--aggregate", "kernel"},
                "--aggregate kernel: the events never reach the host, so there are no event lines; add --output none"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--output", "none", "--aggregate", "kernel",
                 "--metrics-label", "dport"},
                "--aggregate kernel: --metrics-label needs the events in the host (use --aggregate host)"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--output", "none", "--aggregate", "kernel",
                 "--count", "5"},
                "--aggregate kernel: --count needs the events in the host"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--output", "none", "--aggregate", "kernel",
                 "--record-raw", "/tmp/x"},
                "--aggregate kernel: --record-raw needs the events in the host"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--output", "none", "--aggregate", "kernel",
                 "--buffer", "perf"},
                "--aggregate kernel: --buffer needs the events in the host"},
        BadCase{{"--program", "states", "--metrics", "127.0.0.1:1", "--output", "none", "--aggregate", "host",
                 "--aggregate", "host"},
                "--aggregate given more than once"},
        // unknown, repeated, missing
        BadCase{{"--program", "states", "--frobnicate"}, "frobnicate"},
        BadCase{{"--program", "states", "-x"}, "x"},
        BadCase{{"--program", "states", "stray"}, "stray"},
        BadCase{{"--program", "states", "--program", "states"}, "--program"},
        BadCase{{"--program", "states", "--sport", "80", "--sport", "81"}, "--sport"},
        BadCase{{"--program", "states", "-L", "80", "--sport", "81"}, "--sport"},
        BadCase{{"--program", "states", "--duration", "1", "--duration", "2"}, "--duration"},
        BadCase{{"--program", "states", "--count", "1", "--count", "2"}, "--count"},
        BadCase{{"--program", "states", "--sport"}, "sport"},
        BadCase{{"--program"}, "program"},
        BadCase{{}, "--program"},
        BadCase{{"--sport", "80"}, "--program"}));

}  // namespace
}  // namespace tcptrace
