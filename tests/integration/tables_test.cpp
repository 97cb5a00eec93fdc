// The program's own tables, read by the host from real maps: a fixture
// (tests/fixtures/tables.bpf.c) fills a BPF_HISTOGRAM with bpf_log2l() of
// values the test chooses, counts in a BPF_HASH, a BPF_PERCPU_ARRAY and a
// struct-keyed hash, and sends an event; every bucket, count and line is
// checked exactly, per interval, as text, and as Prometheus series.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <map>
#include <regex>
#include <thread>

#include "http_get.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

constexpr unsigned kSelector = 0x7e57ab1e;  // the fixture's SELECTOR
constexpr int kHistogram = 0, kCount = 1, kEvent = 2, kOtherHistogram = 3;

void observe(int op, uint64_t value) {
  errno = 0;
  EXPECT_EQ(::syscall(SYS_lseek, kSelector, static_cast<off_t>(value), op), -1);
  EXPECT_EQ(errno, EBADF);
}

// The values the histogram tests use, and the buckets they fill:
// bpf_log2l(0) and bpf_log2l(1) are 1, [2^(i-1), 2^i - 1] is i.
const std::vector<uint64_t> kValues = {0, 1, 2, 3, 4, 7, 8, 100, 1000, 1000};

std::vector<std::string> fixture_args(std::vector<std::string> more) {
  std::vector<std::string> args = {"--program-file", std::string(TCPTRACE_SOURCE_DIR) + "/tests/fixtures/tables.bpf.c",
                                   "-D", "TEST_PID=" + std::to_string(getpid())};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::vector<json> lines_of(ToolProcess& tool, const std::string& table) {
  std::vector<json> out;
  for (const json& line : tool.events()) {
    if (line.value("event", "") == table) out.push_back(line);
  }
  return out;
}

// Waits until `table` has printed `count` lines.
bool wait_for_table_lines(ToolProcess& tool, const std::string& table, size_t count) {
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (lines_of(tool, table).size() >= count) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

TEST(Tables, EachIntervalPrintsExactCountsThenClears) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_ready(fixture_args({"--interval", "1"}));
  ASSERT_TRUE(tool);
  EXPECT_NE(tool->stderr_text().find("tables read every 1 s and at the end: by_pid (counts, cleared after each print), "
                                     "counts (counts, cleared after each print), dist (log2 histogram, cleared after "
                                     "each print), dist_by_op (log2 histogram, cleared after each print), per_cpu "
                                     "(counts, cleared after each print)"),
            std::string::npos)
      << tool->stderr_text();
  // Right after a tick, so every observation falls into the next interval.
  ASSERT_TRUE(wait_for_table_lines(*tool, "dist", 1)) << tool->stdout_text();
  for (uint64_t v : kValues) observe(kHistogram, v);
  observe(kOtherHistogram, 9);
  for (uint64_t v : {5, 5, 5, 6, 7}) observe(kCount, v);
  ASSERT_TRUE(wait_for_table_lines(*tool, "dist", 3)) << tool->stdout_text();
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();

  const std::vector<json> dist = lines_of(*tool, "dist");
  ASSERT_GE(dist.size(), 4u) << tool->stdout_text();  // 3 ticks and the end
  EXPECT_EQ(dist[0].at("buckets"), json::array()) << dist[0];
  EXPECT_EQ(dist[1].at("unit"), "us");
  EXPECT_EQ(dist[1].at("buckets"), json::parse(R"([{"low":0,"high":1,"count":2},{"low":2,"high":3,"count":2},
      {"low":4,"high":7,"count":2},{"low":8,"high":15,"count":1},{"low":16,"high":31,"count":0},
      {"low":32,"high":63,"count":0},{"low":64,"high":127,"count":1},{"low":128,"high":255,"count":0},
      {"low":256,"high":511,"count":0},{"low":512,"high":1023,"count":2}])"))
      << dist[1];
  EXPECT_EQ(dist[2].at("buckets"), json::array()) << "cleared after the print: " << dist[2];
  EXPECT_GT(dist[1].at("ts_us").get<uint64_t>(), dist[0].at("ts_us").get<uint64_t>());
  EXPECT_TRUE(dist[1].at("time").is_string());

  const std::vector<json> by_op = lines_of(*tool, "dist_by_op");
  ASSERT_GE(by_op.size(), 3u);
  ASSERT_EQ(by_op[1].at("histograms").size(), 2u) << by_op[1];
  EXPECT_EQ(by_op[1].at("histograms")[0].at("key"), json::parse(R"({"op":"histogram"})"));
  EXPECT_EQ(by_op[1].at("histograms")[0].at("buckets"), dist[1].at("buckets"));
  EXPECT_EQ(by_op[1].at("histograms")[1], json::parse(R"({"key":{"op":"other"},"buckets":[{"low":8,"high":15,"count":1}]})"));
  EXPECT_EQ(by_op[2].at("histograms"), json::array());

  const std::vector<json> counts = lines_of(*tool, "counts");
  ASSERT_GE(counts.size(), 3u);
  EXPECT_EQ(counts[1].at("entries"),
            json::parse(R"([{"key":"0x5","value":3},{"key":"0x6","value":1},{"key":"0x7","value":1}])"))
      << counts[1];
  EXPECT_EQ(counts[2].at("entries"), json::array());
  const std::vector<json> per_cpu = lines_of(*tool, "per_cpu");
  ASSERT_GE(per_cpu.size(), 3u);
  EXPECT_EQ(per_cpu[1].at("entries"), json::parse(R"([{"key":1,"value":3},{"key":2,"value":1},{"key":3,"value":1}])"))
      << "summed over CPUs: " << per_cpu[1];
  EXPECT_EQ(per_cpu[2].at("entries"), json::array());
  const std::vector<json> by_pid = lines_of(*tool, "by_pid");
  ASSERT_GE(by_pid.size(), 3u);
  EXPECT_EQ(by_pid[1].at("entries"), json({{{"key", {{"pid", getpid()}, {"comm", own_comm()}}}, {"value", 5}}}));
  // `start` is not listed: the host leaves it alone.
  EXPECT_TRUE(lines_of(*tool, "start").empty()) << tool->stdout_text();
}

TEST(Tables, TextOutputAsBccToolsPrintIt) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_ready(fixture_args({"--output", "text"}));
  ASSERT_TRUE(tool);
  observe(kEvent, 42);
  for (uint64_t v : kValues) observe(kHistogram, v);
  ASSERT_TRUE(tool->wait_for_lines(2, scaled(5s))) << tool->stdout_text();
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();

  const std::string hist_lines =
      "         0 -> 1          : 2        |****************************************|\n"
      "         2 -> 3          : 2        |****************************************|\n"
      "         4 -> 7          : 2        |****************************************|\n"
      "         8 -> 15         : 1        |********************                    |\n"
      "        16 -> 31         : 0        |                                        |\n"
      "        32 -> 63         : 0        |                                        |\n"
      "        64 -> 127        : 1        |********************                    |\n"
      "       128 -> 255        : 0        |                                        |\n"
      "       256 -> 511        : 0        |                                        |\n"
      "       512 -> 1023       : 2        |****************************************|\n";
  char row[256];
  std::snprintf(row, sizeof row, "samples HH:MM:SS.UUUUUU %10d %-16s %16d %s\n", getpid(), own_comm().c_str(), 42,
                "event");
  const std::string expected = std::string("EVENT   TIME                   PID COMM                        VALUE OP\n") +
                               row +
                               "by_pid:\n(empty)\n\n"
                               "counts:\n(empty)\n\n"
                               "dist:\n     usecs               : count     distribution\n" +
                               hist_lines +
                               "\n"
                               "dist_by_op:\n\nop = histogram\n     value               : count     distribution\n" +
                               hist_lines +
                               "\n"
                               "per_cpu:\n(empty)\n\n";
  const std::string text = std::regex_replace(tool->stdout_text(), std::regex(R"(\d\d:\d\d:\d\d\.\d{6})"),
                                              "HH:MM:SS.UUUUUU");
  EXPECT_EQ(text, expected);
}

// A histogram's cumulative buckets in one scrape: le -> count.
std::map<double, double> buckets(const std::string& exposition, const std::string& name) {
  std::map<double, double> out;
  const std::regex bucket("^" + name + "_bucket\\{le=\"([^\"]+)\"\\} (.+)$");
  std::istringstream lines(exposition);
  std::string line;
  std::smatch m;
  while (std::getline(lines, line)) {
    if (std::regex_match(line, m, bucket)) out[m[1] == "+Inf" ? INFINITY : std::stod(m[1])] = std::stod(m[2]);
  }
  return out;
}

TEST(Tables, MetricsExportTheHistogramInSecondsAndCountsAsCounters) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_ready(fixture_args({"--output", "none", "--metrics", "127.0.0.1:0", "--interval", "1"}));
  ASSERT_TRUE(tool);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  ASSERT_NE(port, 0) << tool->stderr_text();
  // Two intervals' worth: the running totals add up across clears.
  for (uint64_t v : kValues) observe(kHistogram, v);
  for (uint64_t v : {5, 5, 6}) observe(kCount, v);
  std::this_thread::sleep_for(1500ms);
  for (uint64_t v : kValues) observe(kHistogram, v);
  for (uint64_t v : {5}) observe(kCount, v);
  std::string exposition;
  std::map<std::string, double> series;
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  do {
    std::this_thread::sleep_for(200ms);
    exposition = http_get(port, "/metrics").body;
    series = parse_exposition(exposition);
  } while (series["tcptrace_table_dist_seconds_count"] < 2.0 * kValues.size() &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(series["tcptrace_table_dist_seconds_count"], 2.0 * kValues.size()) << exposition;
  const std::map<double, double> h = buckets(exposition, "tcptrace_table_dist_seconds");
  ASSERT_EQ(h.size(), 65u) << exposition;  // 64 slots and +Inf
  size_t slot = 0;
  for (const auto& [le, cumulative] : h) {
    double expected = 0;
    if (std::isinf(le)) {
      expected = 2.0 * kValues.size();
    } else {
      // le is 2^slot - 1 µs, in seconds (exact as text up to 2^40 µs; the
      // exposition's digits round the larger ones).
      if (slot <= 40) {
        EXPECT_EQ(std::llround(le * 1e6), static_cast<long long>(slot == 0 ? 0 : (1ull << slot) - 1)) << le;
      }
      // bpf_log2l(0) is 1, so a 0 counts where a 1 does.
      for (uint64_t v : kValues) expected += 2 * (static_cast<double>(std::max<uint64_t>(v, 1)) <= le * 1e6 + 1e-6);
      ++slot;
    }
    EXPECT_EQ(cumulative, expected) << "le=" << le << "\n" << exposition;
  }
  EXPECT_EQ(series["tcptrace_table_counts_total{key=\"0x5\"}"], 3) << exposition;
  EXPECT_EQ(series["tcptrace_table_counts_total{key=\"0x6\"}"], 1) << exposition;
  EXPECT_EQ(series["tcptrace_table_by_pid_total{comm=\"" + own_comm() + "\",pid=\"" + std::to_string(getpid()) + "\"}"],
            4)
      << exposition;
  EXPECT_NE(exposition.find("# HELP tcptrace_table_dist_seconds Log2 histogram from the map 'dist' (BPF_HISTOGRAM)"),
            std::string::npos)
      << exposition;
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
}

// --check names the tables the host would read: the listed ones, with
// their shape, unit and key (types as BCC describes them).
TEST(Tables, CheckListsTheTablesItWouldRead) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ToolProcess check(fixture_args({"--check"}));
  ASSERT_EQ(check.wait_exit(scaled(120s)), 0) << check.stderr_text();
  const json report = json::parse(check.stdout_text());
  std::map<std::string, json> tables;
  for (const json& table : report.at("tables")) tables[table.at("table").get<std::string>()] = table;
  ASSERT_EQ(tables.size(), 5u) << report.at("tables");
  for (const char* name : {"dist", "dist_by_op", "counts", "per_cpu", "by_pid"}) {
    ASSERT_EQ(tables.count(name), 1u) << name;
    EXPECT_EQ(tables[name].at("listed"), true) << name;
  }
  EXPECT_EQ(tables["dist"].at("shape"), "histogram");
  EXPECT_EQ(tables["dist"].at("unit"), "us");
  EXPECT_EQ(tables["dist_by_op"].at("shape"), "histogram");
  EXPECT_EQ(tables["dist_by_op"].at("key"),
            json::parse(R"([{"name":"op","type":"unsigned int","offset":0,"size":4}])"))
      << "a keyed histogram's key without its slot";
  EXPECT_EQ(tables["by_pid"].at("shape"), "counts");
  EXPECT_FALSE(tables["by_pid"].contains("unit"));
  EXPECT_EQ(tables["by_pid"].at("key"), json::parse(R"([{"name":"pid","type":"unsigned int","offset":0,"size":4},
      {"name":"comm","type":"char[16]","offset":4,"size":16}])"));
}

}  // namespace
}  // namespace tcptrace::testing
