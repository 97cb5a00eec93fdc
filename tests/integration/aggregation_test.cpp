// Where the metrics put a value, measured: a fixture program
// (tests/fixtures/bucket_edges.bpf.c) turns values the test chooses into
// state durations and connect latencies, on and just above every bucket
// bound the histograms export, and each bucket and sum is checked exactly,
// counted in the kernel and on the host. A unit mix-up (ns for µs) or a
// bucket index off by one moves values across bounds and fails.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <regex>
#include <sstream>
#include <thread>

#include "http_get.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using namespace std::chrono_literals;

constexpr unsigned kSelector = 0x7e57ed9e;  // the fixture's SELECTOR
constexpr int kStateDuration = 0;
constexpr int kConnectLatency = 1;

// One observation: the fixture's probe reads lseek()'s arguments; no file
// has that descriptor, so the call itself does nothing.
void observe(int kind, uint64_t value_us) {
  errno = 0;
  EXPECT_EQ(::syscall(SYS_lseek, kSelector, static_cast<off_t>(value_us), kind), -1);
  EXPECT_EQ(errno, EBADF);
}

// A histogram's series in one scrape, for the label set that contains
// `labels` (text such as state="ESTABLISHED").
struct Histogram {
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count), as exported
  double count = -1;
  double sum = -1;
};

Histogram find_histogram(const std::string& exposition, const std::string& name, const std::string& labels) {
  Histogram h;
  std::istringstream lines(exposition);
  std::string line;
  const std::regex bucket("^" + name + "_bucket\\{(.*)le=\"([^\"]+)\"\\} (.+)$");
  const std::regex total("^" + name + "_(count|sum)\\{(.*)\\} (.+)$");
  std::smatch m;
  while (std::getline(lines, line)) {
    if (std::regex_match(line, m, bucket) && m[1].str().find(labels) != std::string::npos) {
      const double le = m[2] == "+Inf" ? INFINITY : std::stod(m[2]);
      h.buckets.emplace_back(le, std::stod(m[3]));
    } else if (std::regex_match(line, m, total) && m[2].str().find(labels) != std::string::npos) {
      (m[1] == "count" ? h.count : h.sum) = std::stod(m[3]);
    }
  }
  return h;
}

double find_counter(const std::string& exposition, const std::string& name, const std::vector<std::string>& labels) {
  for (const auto& [series, value] : parse_exposition(exposition)) {
    if (series.rfind(name + "{", 0) != 0) continue;
    bool all = true;
    for (const std::string& label : labels) all &= series.find(label) != std::string::npos;
    if (all) return value;
  }
  return -1;
}

// Scrapes until the histogram has counted `count` observations (the kernel
// path reads its maps at each scrape; the host path drains its buffers
// every 100 ms).
Histogram scrape_until(uint16_t port, const std::string& name, const std::string& labels, double count,
                       std::string& exposition) {
  Histogram h;
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  do {
    exposition = http_get(port, "/metrics").body;
    h = find_histogram(exposition, name, labels);
    if (h.count >= count) break;
    std::this_thread::sleep_for(50ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return h;
}

// Observes 1 µs, learns the histogram's bounds from the exposition, then
// observes each bound and one µs above it (and, for state durations, a 0
// that must only be counted as a transition), and checks every bucket.
void check_edges(uint16_t port, int kind, const std::string& name, const std::string& labels) {
  std::string exposition;
  observe(kind, 1);
  Histogram first = scrape_until(port, name, labels, 1, exposition);
  ASSERT_EQ(first.count, 1) << exposition;
  ASSERT_GE(first.buckets.size(), 2u);
  std::vector<uint64_t> values = {1};
  for (const auto& [le, cumulative] : first.buckets) {
    if (std::isinf(le)) continue;
    const auto bound_us = static_cast<uint64_t>(std::llround(le * 1e6));
    ASSERT_EQ(static_cast<double>(bound_us) / 1e6, le) << "bound " << le << " s is not a whole µs";
    values.push_back(bound_us);
    values.push_back(bound_us + 1);
  }
  for (size_t i = 1; i < values.size(); ++i) observe(kind, values[i]);
  if (kind == kStateDuration) observe(kind, 0);

  const Histogram h = scrape_until(port, name, labels, static_cast<double>(values.size()), exposition);
  ASSERT_EQ(h.count, static_cast<double>(values.size())) << exposition;
  ASSERT_EQ(h.buckets.size(), first.buckets.size());
  double sum_seconds = 0;
  for (uint64_t v : values) sum_seconds += static_cast<double>(v) / 1e6;
  EXPECT_NEAR(h.sum, sum_seconds, sum_seconds * 1e-12) << "sum of " << values.size() << " observations";
  for (const auto& [le, cumulative] : h.buckets) {
    size_t expected = 0;
    for (uint64_t v : values) expected += static_cast<double>(v) / 1e6 <= le;
    EXPECT_EQ(cumulative, static_cast<double>(expected)) << name << " bucket le=" << le;
  }
  if (kind == kStateDuration) {
    // Every transition is counted, also the one whose start was unseen.
    EXPECT_EQ(find_counter(exposition, "tcptrace_tcp_state_transitions_total",
                           {"old_state=\"ESTABLISHED\"", "new_state=\"FIN_WAIT1\"", "family=\"ipv4\""}),
              static_cast<double>(values.size() + 1));
  } else {
    EXPECT_EQ(find_counter(exposition, "tcptrace_tcp_connects_total", {"outcome=\"edge\""}),
              static_cast<double>(values.size()));
  }
}

class BucketEdges : public ::testing::TestWithParam<const char*> {};

TEST_P(BucketEdges, EveryBoundAndSumIsExact) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_ready({"--program-file", std::string(TCPTRACE_SOURCE_DIR) + "/tests/fixtures/bucket_edges.bpf.c",
                           "-D", "TEST_PID=" + std::to_string(getpid()), "--output", "none", "--metrics",
                           "127.0.0.1:0", "--aggregate", GetParam()});
  ASSERT_TRUE(tool);
  const bool in_kernel = std::string(GetParam()) == "kernel";
  EXPECT_EQ(tool->stderr_text().find("(counting in the kernel)") != std::string::npos, in_kernel)
      << tool->stderr_text();
  const uint16_t port = served_metrics_port(tool->stderr_text());
  ASSERT_NE(port, 0) << tool->stderr_text();
  check_edges(port, kStateDuration, "tcptrace_tcp_state_duration_seconds", "state=\"ESTABLISHED\"");
  check_edges(port, kConnectLatency, "tcptrace_tcp_connect_latency_seconds", "family=\"ipv4\",outcome=\"edge\"");
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
}

INSTANTIATE_TEST_SUITE_P(Aggregation, BucketEdges, ::testing::Values("kernel", "host"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace tcptrace::testing
