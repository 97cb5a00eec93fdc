// A user program that declares its own metrics (tests/fixtures/
// declared_metrics.bpf.c): a counter with two labels, a counter of a
// field's values and a histogram with a condition, fed with values the test
// chooses through lseek(), give exact series from one scrape, counted in the
// kernel by the code the host generates and in the host from the events;
// opt-in labels fold, --watch keeps what is declared as before and drops
// what is not.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "http_get.h"
#include "temp_dir.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr unsigned kSelector = 0x7e57ed9e;  // the fixture's SELECTOR

const std::string& fixture() {
  static const std::string path = std::string(TCPTRACE_SOURCE_DIR) + "/tests/fixtures/declared_metrics.bpf.c";
  return path;
}

struct Op {
  unsigned op;      // 0 read, 1 write, 2 sync, 3: beyond the enum's names
  unsigned family;  // 4/6, AF_INET/AF_INET6 (2/10), or anything else
  unsigned port;
  uint64_t value_us;
};

void perform(const Op& op) {
  errno = 0;
  const int whence = static_cast<int>(op.op | op.family << 8 | op.port << 16);
  EXPECT_EQ(::syscall(SYS_lseek, kSelector, static_cast<off_t>(op.value_us), whence), -1);
  EXPECT_EQ(errno, EBADF);
}

const char* op_label(unsigned op) {
  static const char* names[] = {"read", "write", "sync"};
  return op < 3 ? names[op] : "unknown";
}

const char* family_label(unsigned family) {
  return family == 4 || family == 2 ? "ipv4" : family == 6 || family == 10 ? "ipv6" : "other";
}

std::vector<Op> mixed_ops(size_t n) {
  const unsigned families[] = {4, 6, 2, 10, 99};
  const uint64_t values[] = {0, 1, 2, 3, 5, 100, 1000, 1024, 1025, 5000, 1 << 20};
  std::vector<Op> ops;
  for (size_t i = 0; i < n; ++i) {
    ops.push_back({static_cast<unsigned>(i % 4), families[(i / 4) % 5], 0, values[(i * 7) % 11]});
  }
  return ops;
}

// The series one scrape must show after `ops`, computed here from the
// declarations' rules: every op x family count (the named ones exist at 0),
// the sum of value_us per op, and per op the cumulative log2 buckets
// (1 us .. 1024 us) of the non-zero values.
std::map<std::string, double> expected_series(const std::vector<Op>& ops) {
  std::map<std::string, double> series;
  for (const char* op : {"read", "write", "sync"}) {
    for (const char* family : {"ipv4", "ipv6"}) {
      series["fixture_ops_total{family=\"" + std::string(family) + "\",op=\"" + op + "\"}"] = 0;
    }
    series["fixture_op_microseconds_total{op=\"" + std::string(op) + "\"}"] = 0;
    series["fixture_op_latency_seconds_count{op=\"" + std::string(op) + "\"}"] = 0;
  }
  std::vector<double> bounds;
  for (uint64_t b = 1; b <= 1024; b *= 2) bounds.push_back(static_cast<double>(b));
  std::map<std::string, std::vector<double>> buckets;
  for (const Op& op : ops) {
    const std::string o = op_label(op.op);
    series["fixture_ops_total{family=\"" + std::string(family_label(op.family)) + "\",op=\"" + o + "\"}"] += 1;
    series["fixture_op_microseconds_total{op=\"" + o + "\"}"] += static_cast<double>(op.value_us);
    if (op.value_us == 0) continue;
    auto& b = buckets[o];
    b.resize(bounds.size() + 1, 0);
    for (size_t i = 0; i < bounds.size(); ++i) b[i] += static_cast<double>(op.value_us) <= bounds[i] ? 1 : 0;
    b[bounds.size()] += 1;
    series["fixture_op_latency_seconds_count{op=\"" + o + "\"}"] += 1;
    series["fixture_op_latency_seconds_sum{op=\"" + o + "\"}"] += static_cast<double>(op.value_us) / 1e6;
  }
  for (const auto& [op, counts] : buckets) {
    for (size_t i = 0; i < counts.size(); ++i) {
      std::ostringstream le;
      if (i < bounds.size()) {
        le << bounds[i] / 1e6;
      } else {
        le << "+Inf";
      }
      series["fixture_op_latency_seconds_bucket{op=\"" + op + "\",le=\"" + le.str() + "\"}"] = counts[i];
    }
  }
  return series;
}

// The fixture's series in a scrape, once it has counted `events`.
std::map<std::string, double> scrape_fixture(uint16_t port, double events) {
  std::map<std::string, double> all;
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  do {
    all = parse_exposition(http_get(port, "/metrics").body);
    if (all["tcptrace_events_total"] >= events) break;
    std::this_thread::sleep_for(50ms);
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(all["tcptrace_events_total"], events);
  std::map<std::string, double> mine;
  for (const auto& [series, value] : all) {
    if (series.rfind("fixture_", 0) == 0) mine[series] = value;
  }
  return mine;
}

// Compares exactly, sums to rounding (the host adds seconds one event at
// a time, the kernel adds microseconds); bucket series only where expected
// has them (empty ops have none of theirs).
void expect_series(const std::map<std::string, double>& got, const std::map<std::string, double>& expected) {
  for (const auto& [series, value] : expected) {
    ASSERT_EQ(got.count(series), 1u) << series;
    if (series.find("_sum{") != std::string::npos) {
      EXPECT_NEAR(got.at(series), value, 1e-9 * std::max(1.0, value)) << series;
    } else {
      EXPECT_EQ(got.at(series), value) << series;
    }
  }
  for (const auto& [series, value] : got) {
    if (series.find("_bucket{") != std::string::npos || series.find("_sum{") != std::string::npos) continue;
    EXPECT_EQ(expected.count(series), 1u) << "unexpected series " << series << " " << value;
  }
}

class DeclaredMetrics : public ::testing::TestWithParam<const char*> {};

TEST_P(DeclaredMetrics, ExactSeriesFromOneScrape) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_ready({"--program-file", fixture(), "-D", "TEST_PID=" + std::to_string(getpid()), "--output",
                           "none", "--metrics", "127.0.0.1:0", "--aggregate", GetParam()});
  ASSERT_TRUE(tool);
  const bool in_kernel = std::string(GetParam()) == "kernel";
  EXPECT_EQ(tool->stderr_text().find("(counting in the kernel)") != std::string::npos, in_kernel)
      << tool->stderr_text();
  EXPECT_NE(tool->stderr_text().find("(fixture_ops_total, fixture_op_microseconds_total, fixture_op_latency_seconds" +
                                     std::string(in_kernel ? " counted in the kernel," : "") + " and health)"),
            std::string::npos)
      << tool->stderr_text();
  const uint16_t port = served_metrics_port(tool->stderr_text());
  ASSERT_NE(port, 0) << tool->stderr_text();
  const std::vector<Op> ops = mixed_ops(300);
  for (const Op& op : ops) perform(op);
  expect_series(scrape_fixture(port, static_cast<double>(ops.size())), expected_series(ops));
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
}

INSTANTIATE_TEST_SUITE_P(Aggregation, DeclaredMetrics, ::testing::Values("kernel", "host"),
                         [](const auto& info) { return std::string(info.param); });

// An opt-in label (port?, a u16 without a hint) is there only when asked
// for, keeps the first --metrics-label-limit values and folds the rest.
TEST(DeclaredMetricsLabels, OptInPortLabelFoldsBeyondTheLimit) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_ready({"--program-file", fixture(), "-D", "TEST_PID=" + std::to_string(getpid()), "--output",
                           "none", "--metrics", "127.0.0.1:0", "--metrics-label", "port", "--metrics-label-limit",
                           "2"});
  ASSERT_TRUE(tool);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  for (unsigned p : {443u, 80u, 443u, 22u, 8080u, 80u}) perform({0, 4, p, 10});
  const auto series = scrape_fixture(port, 6);
  EXPECT_EQ(series.at("fixture_ops_total{family=\"ipv4\",op=\"read\",port=\"443\"}"), 2);
  EXPECT_EQ(series.at("fixture_ops_total{family=\"ipv4\",op=\"read\",port=\"80\"}"), 2);
  EXPECT_EQ(series.at("fixture_ops_total{family=\"ipv4\",op=\"read\",port=\"other\"}"), 2);
  size_t ops_series = 0;
  for (const auto& [name, value] : series) ops_series += name.rfind("fixture_ops_total{", 0) == 0;
  EXPECT_EQ(ops_series, 3u) << "no pre-created series beside a folded label";
  EXPECT_EQ(series.at("fixture_op_microseconds_total{op=\"read\"}"), 60) << "it declares no port label";
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();

  ToolProcess unknown({"--program-file", fixture(), "--output", "none", "--metrics", "127.0.0.1:0",
                       "--metrics-label", "dport"});
  EXPECT_EQ(unknown.wait_exit(scaled(60s)), 2);
  EXPECT_EQ(unknown.stderr_text(),
            "tcptrace-bcc: --metrics-label dport: program declared_metrics declares no opt-in label of that name "
            "(a 'labels=...dport?' in a tcptrace:metric line)\n");
}

// The same program's JSON lines carry the fields the metrics read.
TEST(DeclaredMetricsLabels, JsonLinesOfTheSameEvents) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_ready({"--program-file", fixture(), "-D", "TEST_PID=" + std::to_string(getpid())});
  ASSERT_TRUE(tool);
  perform({1, 6, 8080, 1025});
  perform({7, 99, 0, 0});
  ASSERT_TRUE(tool->wait_for_lines(2, scaled(10s))) << tool->stderr_text();
  EXPECT_EQ(tool->stop(SIGINT), 0);
  const auto events = tool->events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["op"], "write");
  EXPECT_EQ(events[0]["family"], 6);
  EXPECT_EQ(events[0]["port"], 8080);
  EXPECT_EQ(events[0]["value_us"], 1025);
  EXPECT_EQ(events[1]["op"], "7") << "a value beyond the enum's names prints as its number";
}

// One row of bcc's print_log2_hist drawing, for bounds low..high.
std::string histogram_row(uint64_t low, const std::string& high, uint64_t count, uint64_t most) {
  char line[128];
  const std::string bar(static_cast<size_t>(40 * count / most), '*');
  std::snprintf(line, sizeof line, "%10llu -> %-10s : %-8llu |%-40s|\n", static_cast<unsigned long long>(low),
                high.c_str(), static_cast<unsigned long long>(count), bar.c_str());
  return line;
}

// --output text: the events as columns, and at the end the declared metrics
// as bcc's tools print theirs: counters by label set, each histogram drawn
// between its declared bounds (log2(1us,1ms): 1, 2, 4, ... 1024 us).
TEST(DeclaredMetricsReport, TextOutputEndsWithTheMetrics) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_ready({"--program-file", fixture(), "-D", "TEST_PID=" + std::to_string(getpid()), "--output",
                           "text"});
  ASSERT_TRUE(tool);
  perform({0, 4, 0, 10});
  perform({0, 2, 0, 1025});
  perform({1, 6, 0, 3});
  ASSERT_TRUE(tool->wait_for_lines(4, scaled(10s))) << tool->stderr_text();  // header and three rows
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  std::string read_rows, write_rows;
  const std::vector<std::string> highs = {"1", "2", "4", "8", "16", "32", "64", "128", "256", "512", "1024", ""};
  for (size_t i = 0; i < highs.size(); ++i) {
    const uint64_t low = i == 0 ? 0 : std::stoull(highs[i - 1]) + 1;
    read_rows += histogram_row(low, highs[i], i == 4 || i == 11 ? 1 : 0, 1);
    if (i <= 2) write_rows += histogram_row(low, highs[i], i == 2 ? 1 : 0, 1);
  }
  const std::string expected = "fixture_ops_total{family=\"ipv4\",op=\"read\"} 2\n"
                               "fixture_ops_total{family=\"ipv6\",op=\"write\"} 1\n"
                               "fixture_op_microseconds_total{op=\"read\"} 1035\n"
                               "fixture_op_microseconds_total{op=\"write\"} 3\n"
                               "\nfixture_op_latency_seconds {op=\"read\"}\n"
                               "     usecs               : count     distribution\n" +
                               read_rows +
                               "\nfixture_op_latency_seconds {op=\"write\"}\n"
                               "     usecs               : count     distribution\n" +
                               write_rows;
  const std::string out = tool->stdout_text();
  ASSERT_GE(out.size(), expected.size()) << out;
  EXPECT_EQ(out.substr(out.size() - expected.size()), expected) << out;
  const auto lines = tool->stdout_lines();
  ASSERT_GE(lines.size(), 4u);
  EXPECT_NE(lines[0].find("VALUE_US"), std::string::npos) << "the column header first: " << lines[0];
}

// --interval: each print is one JSON line per metric with what grew since
// the previous print (a series that did not grow, a metric nothing reached
// are left out), so the lines add up to the totals.
TEST(DeclaredMetricsReport, IntervalPrintsWhatGrewAsJsonLines) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  // --record-raw takes regular files only (trusted_file.h): a private one.
  const TempDir raw("tcptrace-raw");
  auto tool = start_ready({"--program-file", fixture(), "-D", "TEST_PID=" + std::to_string(getpid()), "--output",
                           "none", "--record-raw", (raw.path() / "samples.raw").string(), "--interval", "0.5"});
  ASSERT_TRUE(tool);
  perform({2, 4, 0, 0});
  perform({2, 4, 0, 0});
  ASSERT_TRUE(tool->wait_for_lines(1, scaled(10s))) << tool->stderr_text();
  std::this_thread::sleep_for(600ms);  // at least one print between the two bursts
  perform({2, 4, 0, 7});
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  std::map<std::string, double> totals;
  std::vector<nlohmann::json> lines;
  do {
    std::this_thread::sleep_for(100ms);
    totals.clear();
    lines.clear();
    std::istringstream text(tool->stdout_text());
    for (std::string line; std::getline(text, line);) lines.push_back(nlohmann::json::parse(line));
    for (const auto& line : lines) {
      for (const auto& series : line["series"]) {
        totals[line["event"].get<std::string>()] += series.contains("value") ? series["value"].get<double>()
                                                                             : series["count"].get<double>();
      }
    }
  } while (totals["fixture_op_latency_seconds"] < 1 && std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  EXPECT_EQ(totals["fixture_ops_total"], 3) << tool->stdout_text();
  EXPECT_EQ(totals["fixture_op_microseconds_total"], 7) << tool->stdout_text();
  EXPECT_EQ(totals["fixture_op_latency_seconds"], 1) << tool->stdout_text();
  for (const auto& line : lines) {
    EXPECT_FALSE(line["series"].empty()) << line.dump();
    EXPECT_TRUE(line["time"].is_string()) << line.dump();
    if (line["event"] == "fixture_op_latency_seconds") {
      EXPECT_EQ(line["series"][0]["labels"], nlohmann::json::parse(R"({"op":"sync"})"));
      EXPECT_EQ(line["series"][0]["buckets"][3], nlohmann::json::parse(R"({"low":5,"high":8,"count":1})"));
      EXPECT_EQ(line["unit"], "us");
    }
  }
  EXPECT_GE(lines.size(), 4u) << "the first burst's line, then one line per metric for the second";
}


std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// --watch with changed declarations, counting in the kernel: a metric
// declared as before continues (the old version's counts, read a last time
// before the swap, plus the new one's); a metric no longer declared
// disappears; one whose buckets changed starts afresh with the new bounds.
TEST(DeclaredMetricsWatch, SeriesFollowTheDeclarations) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  TempDir dir("tcptrace-declared");
  ASSERT_FALSE(dir.path().empty());
  const fs::path program = dir.path() / "declared.bpf.c";
  const std::string original = read_text(fixture());
  { std::ofstream(program) << original; }
  auto tool = start_ready({"--program-file", program.string(), "--watch", "-D", "TEST_PID=" + std::to_string(getpid()),
                           "--output", "none", "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(tool);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  for (int i = 0; i < 3; ++i) perform({0, 4, 0, 10});
  // No scrape before the swap: the old version's maps are read when it stops.
  std::string edited = original;
  const std::string micro = " * tcptrace:metric counter fixture_op_microseconds_total value=value_us labels=op \\\n"
                            " *     help=\"Time spent in operations, in microseconds\"\n";
  ASSERT_NE(edited.find(micro), std::string::npos);
  edited.erase(edited.find(micro), micro.size());
  const size_t buckets = edited.find("buckets=log2(1us,1ms)");
  ASSERT_NE(buckets, std::string::npos);
  edited.replace(buckets, std::string("buckets=log2(1us,1ms)").size(), "buckets=5us,50us");
  { std::ofstream(program) << edited; }
  ASSERT_TRUE(tool->wait_for_stderr_line(line_starting_with("tcptrace-bcc: reloaded: "), scaled(120s)))
      << tool->stderr_text();
  for (int i = 0; i < 2; ++i) perform({0, 4, 0, 20});
  const auto series = scrape_fixture(port, 5);
  EXPECT_EQ(series.at("fixture_ops_total{family=\"ipv4\",op=\"read\"}"), 5) << "3 before the swap, 2 after";
  EXPECT_EQ(series.count("fixture_op_microseconds_total{op=\"read\"}"), 0u) << "no longer declared";
  EXPECT_EQ(series.at("fixture_op_latency_seconds_count{op=\"read\"}"), 2) << "new buckets: counted afresh";
  EXPECT_EQ(series.at("fixture_op_latency_seconds_bucket{op=\"read\",le=\"5e-05\"}"), 2);
  EXPECT_EQ(series.count("fixture_op_latency_seconds_bucket{op=\"read\",le=\"1.6e-05\"}"), 0u) << "old bounds gone";
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  EXPECT_NE(tool->stderr_text().find("tcptrace-bcc: 5 events (counted in the kernel)"), std::string::npos)
      << tool->stderr_text();
}

// --check lists the declared metrics: where each is declared and counted,
// its labels, and a histogram's value, unit and exported bounds.
TEST(DeclaredMetricsCheck, CheckListsTheMetrics) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  for (const char* where : {"host", "kernel"}) {
    ToolProcess check({"--program-file", fixture(), "--check", "--aggregate", where});
    ASSERT_EQ(check.wait_exit(scaled(120s)), 0) << check.stderr_text();
    const auto report = nlohmann::json::parse(check.stdout_text());
    ASSERT_EQ(report.at("metrics").size(), 3u) << report.dump();
    const auto& ops = report["metrics"][0];
    EXPECT_EQ(ops["name"], "fixture_ops_total");
    EXPECT_EQ(ops["kind"], "counter");
    EXPECT_EQ(ops["line"], 9);
    EXPECT_EQ(ops["labels"], nlohmann::json::parse(R"([{"name":"op","field":"op","opt_in":false},
        {"name":"family","field":"family","opt_in":false},{"name":"port","field":"port","opt_in":true}])"));
    EXPECT_EQ(ops["table"], std::string(where) == "host" ? nlohmann::json("events") : nlohmann::json(nullptr));
    const auto& latency = report["metrics"][2];
    EXPECT_EQ(latency["unit"], "us");
    EXPECT_EQ(latency["value"], "value_us");
    ASSERT_EQ(latency["bounds"].size(), 11u);
    EXPECT_DOUBLE_EQ(latency["bounds"][0].get<double>(), 1e-6);
    EXPECT_DOUBLE_EQ(latency["bounds"][10].get<double>(), 1024e-6);
  }
}

// Declarations naming fields the events do not have: one line per mistake at
// the declaration's FILE:LINE, exit 1, in both variants (in the kernel's,
// the generated code would otherwise fail to compile at the output line).
TEST(DeclaredMetricsCheck, MistakesAtTheirLinesInBothVariants) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  TempDir dir("tcptrace-declared");
  ASSERT_FALSE(dir.path().empty());
  const fs::path program = dir.path() / "typo.bpf.c";
  std::string text = read_text(fixture());
  for (const auto& [from, to] : {std::make_pair("labels=op,family,port?", "labels=op,famly,port?"),
                                 std::make_pair("value=value_us unit=us", "value=value_ms unit=us")}) {
    ASSERT_NE(text.find(from), std::string::npos) << from;
    text.replace(text.find(from), std::string(from).size(), to);
  }
  { std::ofstream(program) << text; }
  const std::string expected = "tcptrace-bcc: " + program.string() +
                               ":9: metric fixture_ops_total: the event struct has no field 'famly'\n"
                               "tcptrace-bcc: " + program.string() +
                               ":13: metric fixture_op_latency_seconds: the event struct has no field 'value_ms'\n";
  for (const std::vector<std::string>& extra : {std::vector<std::string>{}, {"--aggregate", "kernel"}}) {
    std::vector<std::string> args = {"--program-file", program.string(), "--check"};
    args.insert(args.end(), extra.begin(), extra.end());
    ToolProcess check(args);
    EXPECT_EQ(check.wait_exit(scaled(120s)), 1);
    std::string errors;
    std::istringstream lines(check.stderr_text());
    for (std::string line; std::getline(lines, line);) {
      if (line.find("using kernel headers") == std::string::npos) errors += line + "\n";
    }
    EXPECT_EQ(errors, expected) << (extra.empty() ? "host" : "kernel");
    EXPECT_EQ(check.stdout_text(), "");
  }
}

}  // namespace
}  // namespace tcptrace::testing
