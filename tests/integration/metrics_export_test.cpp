// --metrics against real loopback traffic: the tool serves /metrics on a
// port it picks (127.0.0.1:0, named in its "serving metrics at" line), this
// test makes connections itself and scrapes, and every count must be exact.
// Port filters (--dport) keep other traffic on the machine out of the counts.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <crypt.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "http_get.h"
#include "loopback.h"
#include "temp_dir.h"
#include "tls_test_support.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

// connlat with metrics only, its --dport limited to a listener and a closed
// port of the test's own, so other traffic on the machine stays out.
struct ConnlatMetricsRun {
  Socket listener = bind_loopback(AF_INET);
  ClosedPort closed{AF_INET};
  std::unique_ptr<ToolProcess> tool;
  uint16_t metrics_port = 0;  // 0 when the tool did not start

  explicit ConnlatMetricsRun(const std::vector<std::string>& more_options = {}) {
    start_listening(listener);
    const std::string ports = std::to_string(listener.local_port()) + "," + std::to_string(closed.port);
    std::vector<std::string> options = {"--program", "connlat", "--metrics", "127.0.0.1:0", "--output", "none",
                                        "--dport", ports};
    options.insert(options.end(), more_options.begin(), more_options.end());
    tool = start_ready(options);
    if (tool) metrics_port = served_metrics_port(tool->stderr_text());
  }
};

std::map<std::string, double> scrape(uint16_t port) {
  const HttpResponse response = http_get(port, "/metrics");
  EXPECT_EQ(response.status, 200) << response.headers;
  return parse_exposition(response.body);
}

double value_or_zero(const std::map<std::string, double>& series, const std::string& name) {
  const auto it = series.find(name);
  return it == series.end() ? 0 : it->second;
}

// Scrapes `port` until `done` holds for a scrape, or 10 s (scaled) pass;
// returns the last scrape, which the caller's assertions then check in
// full. The tool reads its buffers every 100 ms and counts an event in
// several series one after the other, so one scrape can come too early.
std::map<std::string, double> scrape_until(uint16_t port,
                                           const std::function<bool(const std::map<std::string, double>&)>& done) {
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  std::map<std::string, double> series = scrape(port);
  while (!done(series) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    series = scrape(port);
  }
  return series;
}

// Scrapes until every series in `expected` has its value (see scrape_until).
// A count above the expected one shows in the summary line at exit, after
// the tool drained its buffers.
std::map<std::string, double> scrape_until_values(uint16_t port, const std::map<std::string, double>& expected) {
  return scrape_until(port, [&](const std::map<std::string, double>& series) {
    for (const auto& [name, value] : expected) {
      if (value_or_zero(series, name) != value) return false;
    }
    return true;
  });
}

void make_connects(uint16_t listening_port, int established, uint16_t closed_port, int refused) {
  std::vector<Socket> open;
  for (int i = 0; i < established; ++i) {
    open.push_back(connect_loopback(AF_INET, listening_port));
    EXPECT_GE(open.back().fd(), 0);
  }
  for (int i = 0; i < refused; ++i) {
    EXPECT_LT(connect_loopback(AF_INET, closed_port).fd(), 0);
    EXPECT_EQ(errno, ECONNREFUSED);
  }
}

// `count` connections to `listener`, each accepted and closed by the client
// first: its side goes FIN_WAIT1, FIN_WAIT2, TIME_WAIT.
void open_and_close(Socket& listener, int count) {
  for (int i = 0; i < count; ++i) {
    Socket client = connect_loopback(AF_INET, listener.local_port());
    ASSERT_GE(client.fd(), 0);
    Socket server = accept_one(listener);
    client.close();
    server.close();
  }
}

// What states counts, with --dport the listener's port, for `connections`
// made by open_and_close(): the client's five transitions each, CLOSE ->
// SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE (tcp_time_wait()
// closes the socket; the TIME_WAIT one that follows is another object), and
// the time spent in each of the four states left after the first.
std::map<std::string, double> client_closing_first_series(int connections) {
  std::map<std::string, double> series;
  const std::vector<std::string> states = {"CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"};
  for (size_t i = 1; i < states.size(); ++i) {
    series["tcptrace_tcp_state_transitions_total{family=\"ipv4\",new_state=\"" + states[i] + "\",old_state=\"" +
           states[i - 1] + "\"}"] = connections;
    if (i > 1) series["tcptrace_tcp_state_duration_seconds_count{state=\"" + states[i - 1] + "\"}"] = connections;
  }
  series["tcptrace_events_total"] = 5 * connections;
  return series;
}

// The value of tcptrace_program_info's `aggregation` label, "" if absent.
std::string aggregation_of(const std::map<std::string, double>& series) {
  for (const auto& [name, value] : series) {
    if (name.rfind("tcptrace_program_info{", 0) != 0 || value != 1) continue;
    const std::string marker = "aggregation=\"";
    const size_t at = name.find(marker);
    if (at == std::string::npos) return "";
    return name.substr(at + marker.size(), name.find('"', at + marker.size()) - at - marker.size());
  }
  return "";
}

// --output none counts every connect exactly, wherever it aggregates:
// "kernel" (per-CPU maps read at scrape time) or "host" (ring buffer
// records counted as they arrive).
class MetricsAggregation : public ::testing::TestWithParam<std::string> {};

TEST_P(MetricsAggregation, ConnlatCountsEveryConnectExactlyWithOutputNone) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const std::string where = GetParam();
  ConnlatMetricsRun run({"--aggregate", where});
  ASSERT_NE(run.metrics_port, 0) << (run.tool ? run.tool->stderr_text() : "");
  EXPECT_NE(run.tool->stderr_text().find(where == "kernel" ? "(counting in the kernel)" : "(ring buffer)"),
            std::string::npos)
      << run.tool->stderr_text();

  const auto before = scrape(run.metrics_port);
  EXPECT_EQ(before.at("tcptrace_tcp_connects_total{outcome=\"established\"}"), 0);
  EXPECT_EQ(before.at("tcptrace_tcp_connects_total{outcome=\"refused\"}"), 0);
  EXPECT_EQ(aggregation_of(before), where);

  make_connects(run.listener.local_port(), 5, run.closed.port, 3);
  const auto series = scrape_until_values(
      run.metrics_port, {{"tcptrace_tcp_connects_total{outcome=\"established\"}", 5},
                         {"tcptrace_tcp_connects_total{outcome=\"refused\"}", 3},
                         {"tcptrace_tcp_connect_latency_seconds_count{family=\"ipv4\",outcome=\"established\"}", 5},
                         {"tcptrace_tcp_connect_latency_seconds_count{family=\"ipv4\",outcome=\"refused\"}", 3}});
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"established\"}"), 5);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"refused\"}"), 3);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"timeout\"}"), 0);
  EXPECT_EQ(series.at("tcptrace_events_total"), 8);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv4\",outcome=\"established\"}"), 5);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv4\",outcome=\"refused\"}"), 3);
  // Loopback connects finish well within 100 ms.
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv4\",outcome=\"established\","
                      "le=\"0.1\"}"),
            5);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv4\",outcome=\"established\","
                      "le=\"+Inf\"}"),
            5);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv6\",outcome=\"established\"}"), 0);
  EXPECT_GT(series.at("tcptrace_tcp_connect_latency_seconds_sum{family=\"ipv4\",outcome=\"established\"}"), 0);
  EXPECT_EQ(series.at("tcptrace_lost_events_total{reason=\"buffer\"}"), 0);
  EXPECT_EQ(series.at("tcptrace_lost_events_total{reason=\"skipped_run\"}"), 0);
  EXPECT_GE(series.at("tcptrace_probes_attached"), 1);
  bool build_info = false;
  for (const auto& [name, value] : series) build_info |= name.rfind("tcptrace_build_info{", 0) == 0 && value == 1;
  EXPECT_TRUE(build_info);

  EXPECT_EQ(run.tool->stop(SIGINT), 0) << run.tool->stderr_text();
  EXPECT_EQ(run.tool->stdout_text(), "") << "--output none writes no event lines";
  const std::string err = run.tool->stderr_text();
  EXPECT_NE(err.find(where == "kernel" ? "tcptrace-bcc: 8 events (counted in the kernel), 0 lost"
                                       : "tcptrace-bcc: 8 events, 0 lost"),
            std::string::npos)
      << err;
}

INSTANTIATE_TEST_SUITE_P(Where, MetricsAggregation, ::testing::Values("kernel", "host"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// Without --aggregate, --output none counts in the kernel when the program
// can; anything that needs the events in the host keeps them there.
TEST(MetricsExport, OutputNoneAggregatesInTheKernelByDefault) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ConnlatMetricsRun run;
  ASSERT_NE(run.metrics_port, 0) << (run.tool ? run.tool->stderr_text() : "");
  EXPECT_EQ(aggregation_of(scrape(run.metrics_port)), "kernel");
  EXPECT_NE(run.tool->stderr_text().find("(tcptrace_tcp_connects_total, tcptrace_tcp_connect_latency_seconds counted in the kernel, and health)"), std::string::npos)
      << run.tool->stderr_text();
  EXPECT_EQ(run.tool->stop(SIGINT), 0) << run.tool->stderr_text();

  ConnlatMetricsRun with_count({"--count", "1000"});
  ASSERT_NE(with_count.metrics_port, 0) << (with_count.tool ? with_count.tool->stderr_text() : "");
  EXPECT_EQ(aggregation_of(scrape(with_count.metrics_port)), "host");
  EXPECT_EQ(with_count.tool->stop(SIGINT), 0) << with_count.tool->stderr_text();
}

// Two runs side by side on the same traffic, one counting in the kernel and
// one in the host, report the same transitions and the same number of
// durations per state (the buckets may differ: each program takes its own
// timestamps).
TEST(MetricsExport, StatesCountedInTheKernelMatchStatesCountedInTheHost) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  const std::vector<std::string> common = {"--program", "states", "--metrics", "127.0.0.1:0", "--output", "none",
                                           "--dport", std::to_string(listener.local_port()), "--aggregate"};
  std::vector<std::string> kernel_options = common, host_options = common;
  kernel_options.push_back("kernel");
  host_options.push_back("host");
  auto kernel_tool = start_ready(kernel_options);
  ASSERT_TRUE(kernel_tool);
  auto host_tool = start_ready(host_options);
  ASSERT_TRUE(host_tool);
  const uint16_t kernel_port = served_metrics_port(kernel_tool->stderr_text());
  const uint16_t host_port = served_metrics_port(host_tool->stderr_text());
  ASSERT_NE(kernel_port, 0) << kernel_tool->stderr_text();
  ASSERT_NE(host_port, 0) << host_tool->stderr_text();

  constexpr int kConnections = 6;
  open_and_close(listener, kConnections);
  const auto host_series = scrape_until_values(host_port, client_closing_first_series(kConnections));
  const auto kernel_series = scrape_until_values(kernel_port, client_closing_first_series(kConnections));
  EXPECT_EQ(kernel_tool->stop(SIGINT), 0) << kernel_tool->stderr_text();
  EXPECT_EQ(host_tool->stop(SIGINT), 0) << host_tool->stderr_text();
  EXPECT_EQ(aggregation_of(kernel_series), "kernel");
  EXPECT_EQ(aggregation_of(host_series), "host");

  const auto counts = [](const std::map<std::string, double>& series) {
    std::map<std::string, double> kept;
    for (const auto& [name, value] : series) {
      if (name.rfind("tcptrace_tcp_state_transitions_total{", 0) == 0 ||
          name.rfind("tcptrace_tcp_state_duration_seconds_count{", 0) == 0 || name == "tcptrace_events_total") {
        kept[name] = value;
      }
    }
    return kept;
  };
  EXPECT_EQ(counts(kernel_series), counts(host_series));
  EXPECT_EQ(kernel_series.at("tcptrace_tcp_state_transitions_total{family=\"ipv4\",new_state=\"ESTABLISHED\","
                             "old_state=\"SYN_SENT\"}"),
            kConnections);
  EXPECT_EQ(kernel_series.at("tcptrace_tcp_state_transitions_total{family=\"ipv4\",new_state=\"SYN_SENT\","
                             "old_state=\"CLOSE\"}"),
            kConnections);
  EXPECT_EQ(kernel_series.at("tcptrace_tcp_state_duration_seconds_count{state=\"SYN_SENT\"}"), kConnections);
  EXPECT_EQ(kernel_series.at("tcptrace_tcp_state_duration_seconds_bucket{state=\"SYN_SENT\",le=\"0.01\"}"),
            kConnections);
}

// JSON lines and metrics from one run count the same events: the
// transitions the metrics report are exactly those of the printed lines.
TEST(MetricsExport, StatesTransitionsMatchTheJsonLinesOfTheSameRun) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  // --dport: the client side of each connection (its CLOSE -> SYN_SENT
  // already carries the remote port).
  auto tool = start_ready({"--program", "states", "--metrics", "127.0.0.1:0", "--dport",
                           std::to_string(listener.local_port())});
  ASSERT_TRUE(tool);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  ASSERT_NE(port, 0) << tool->stderr_text();
  constexpr int kConnections = 4;
  open_and_close(listener, kConnections);
  // Every event is counted before its poll batch is written out.
  const auto series = scrape_until_values(port, client_closing_first_series(kConnections));
  EXPECT_TRUE(tool->wait_for_lines(kConnections * 5, 10s)) << tool->stdout_text();
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();

  std::map<std::string, double> from_lines;
  size_t lines = 0;
  for (const json& e : tool->events()) {
    ++lines;
    const std::string key = "tcptrace_tcp_state_transitions_total{family=\"ipv" + std::to_string(e.at("family").get<int>()) +
                            "\",new_state=\"" + e.at("newstate").get<std::string>() + "\",old_state=\"" +
                            e.at("oldstate").get<std::string>() + "\"}";
    from_lines[key] += 1;
  }
  std::map<std::string, double> from_metrics;
  for (const auto& [name, value] : series) {
    if (name.rfind("tcptrace_tcp_state_transitions_total{", 0) == 0) from_metrics[name] = value;
  }
  EXPECT_EQ(from_metrics, from_lines);
  EXPECT_EQ(series.at("tcptrace_events_total"), static_cast<double>(lines));
  EXPECT_EQ(from_metrics["tcptrace_tcp_state_transitions_total{family=\"ipv4\",new_state=\"ESTABLISHED\",old_state="
                         "\"SYN_SENT\"}"],
            kConnections);
  // Each connection's time in SYN_SENT was seen from its start.
  EXPECT_EQ(series.at("tcptrace_tcp_state_duration_seconds_count{state=\"SYN_SENT\"}"), kConnections);
  EXPECT_EQ(series.at("tcptrace_tcp_state_duration_seconds_bucket{state=\"SYN_SENT\",le=\"0.01\"}"), kConnections);
}

TEST(MetricsExport, DportLabelKeepsTheFirstPortsAndFoldsTheRest) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ConnlatMetricsRun run({"--metrics-label", "dport", "--metrics-label-limit", "1"});
  ASSERT_NE(run.metrics_port, 0) << (run.tool ? run.tool->stderr_text() : "");
  // The listener's port is seen first and keeps its label; the closed
  // port's connects fold into "other".
  make_connects(run.listener.local_port(), 2, run.closed.port, 3);
  const std::string listening = std::to_string(run.listener.local_port());
  const auto series = scrape_until_values(
      run.metrics_port,
      {{"tcptrace_tcp_connects_total{dport=\"" + listening + "\",outcome=\"established\"}", 2},
       {"tcptrace_tcp_connects_total{dport=\"other\",outcome=\"refused\"}", 3},
       {"tcptrace_tcp_connect_latency_seconds_count{dport=\"other\",family=\"ipv4\",outcome=\"refused\"}", 3}});
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{dport=\"" + listening + "\",outcome=\"established\"}"), 2);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{dport=\"other\",outcome=\"refused\"}"), 3);
  EXPECT_EQ(series.count("tcptrace_tcp_connects_total{dport=\"" + std::to_string(run.closed.port) +
                         "\",outcome=\"refused\"}"),
            0u);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_count{dport=\"other\",family=\"ipv4\",outcome="
                      "\"refused\"}"),
            3);
  EXPECT_EQ(run.tool->stop(SIGINT), 0) << run.tool->stderr_text();
  EXPECT_NE(run.tool->stderr_text().find("tcptrace-bcc: 5 events"), std::string::npos) << run.tool->stderr_text();
}

// A port another process holds: one line, exit 1, nothing loaded (the port
// is bound before anything is compiled).
TEST(MetricsExport, PortInUseIsARuntimeErrorWithNothingLoaded) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket holder = bind_loopback(AF_INET);
  start_listening(holder);
  const std::set<uint32_t> before = loaded_bpf_program_ids();
  const std::string address = "127.0.0.1:" + std::to_string(holder.local_port());
  ToolProcess tool({"--program", "connlat", "--metrics", address});
  EXPECT_EQ(tool.wait_exit(60s), 1);
  const std::string err = tool.stderr_text();
  EXPECT_EQ(err.rfind("tcptrace-bcc: --metrics: cannot serve on " + address + ": ", 0), 0u) << err;
  EXPECT_NE(err.find("in use"), std::string::npos) << "civetweb's reason is kept: " << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_EQ(tool.stdout_text(), "");
  EXPECT_EQ(loaded_bpf_program_ids(), before);
}

// ---------------------------------------------------------------------------
// End to end: a real Prometheus server (Debian's /usr/bin/prometheus) scrapes
// the tool every second; its HTTP API must return the exact connect counts
// and the latency quantile that the tool's own buckets give.

const char* const kPrometheus = "/usr/bin/prometheus";

// A temporary directory removed with everything in it, also on failure.

// An instant query's result vector.
json prometheus_query(uint16_t port, const std::string& promql) {
  std::string encoded;
  for (unsigned char c : promql) {
    if (std::isalnum(c) || c == '_' || c == '.' || c == '-') {
      encoded += static_cast<char>(c);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      encoded += hex;
    }
  }
  const HttpResponse response = http_get(port, "/api/v1/query?query=" + encoded);
  if (response.status != 200) return json::array();
  const json reply = json::parse(response.body, nullptr, false);
  if (reply.is_discarded() || reply.value("status", "") != "success") return json::array();
  return reply.at("data").at("result");
}

// The single value of a query, or NaN while it has none.
double query_value(uint16_t port, const std::string& promql) {
  const json result = prometheus_query(port, promql);
  if (result.size() != 1) return std::nan("");
  return std::stod(result[0].at("value").at(1).get<std::string>());
}

// Prometheus's histogram_quantile() on cumulative buckets (promql/quantile.go:
// linear interpolation inside the bucket holding the rank; the first bucket
// starts at 0 when its bound is positive).
double histogram_quantile(double q, const std::vector<std::pair<double, double>>& buckets) {
  const double total = buckets.back().second;
  const double rank = q * total;
  size_t b = 0;
  while (b < buckets.size() - 1 && buckets[b].second < rank) ++b;
  if (std::isinf(buckets[b].first)) return buckets[buckets.size() - 2].first;
  double start = 0, count = buckets[b].second, end = buckets[b].first, below = 0;
  if (b > 0) {
    start = buckets[b - 1].first;
    below = buckets[b - 1].second;
    count -= below;
  }
  return start + (end - start) * ((rank - below) / count);
}

// Against a real Prometheus, with the counts aggregated in the kernel (the
// default for --output none) and in the host.
class MetricsPrometheus : public ::testing::TestWithParam<std::string> {};

TEST_P(MetricsPrometheus, RealServerScrapesExactCountsAndQuantile) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  struct stat st {};
  if (::stat(kPrometheus, &st) != 0) {
    if (running_in_ci()) FAIL() << "CI=true: " << kPrometheus << " is missing (scripts/setup installs prometheus)";
    GTEST_SKIP() << kPrometheus << " is missing (Debian package prometheus)";
  }
  ConnlatMetricsRun run({"--aggregate", GetParam()});
  ASSERT_NE(run.metrics_port, 0) << (run.tool ? run.tool->stderr_text() : "");

  fs::path data_dir;
  {
    TempDir dir("tcptrace-prometheus");
    ASSERT_FALSE(dir.path().empty());
    data_dir = dir.path() / "data";
    std::ofstream(dir.path() / "prometheus.yml") << "global:\n"
                                                    "  scrape_interval: 1s\n"
                                                    "  evaluation_interval: 1s\n"
                                                    "scrape_configs:\n"
                                                    "  - job_name: tcptrace\n"
                                                    "    static_configs:\n"
                                                    "      - targets: ['127.0.0.1:"
                                                 << run.metrics_port << "']\n";
    const uint16_t prometheus_port = free_loopback_port();
    ToolProcess prometheus({}, {"--config.file=" + (dir.path() / "prometheus.yml").string(),
                                "--storage.tsdb.path=" + data_dir.string(),
                                "--web.listen-address=127.0.0.1:" + std::to_string(prometheus_port)},
                           kPrometheus);
    ASSERT_TRUE(prometheus.wait_for_stderr_line(
        line_ending_with(" msg=\"Server is ready to receive web requests.\""), 60s))
        << prometheus.stderr_text();

    // One scrape before the traffic, so rate() has a sample to rise from.
    for (int i = 0; i < 100 && query_value(prometheus_port, "up{job=\"tcptrace\"}") != 1; ++i) {
      std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(query_value(prometheus_port, "up{job=\"tcptrace\"}"), 1) << prometheus.stderr_text();

    make_connects(run.listener.local_port(), 6, run.closed.port, 3);
    // Wait until Prometheus has scraped the tool after all nine connects.
    const auto connects_of = [&](const std::string& outcome) {
      return query_value(prometheus_port, "tcptrace_tcp_connects_total{job=\"tcptrace\",outcome=\"" + outcome + "\"}");
    };
    for (int i = 0; i < 150 && !(connects_of("established") == 6 && connects_of("refused") == 3); ++i) {
      std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(connects_of("established"), 6) << prometheus.stderr_text();
    EXPECT_EQ(connects_of("refused"), 3);
    EXPECT_EQ(connects_of("timeout"), 0);

    // The median connect latency, from Prometheus and from the tool's own
    // buckets (nothing changes them any more: the port filter holds).
    const auto series = scrape(run.metrics_port);
    std::vector<std::pair<double, double>> buckets;
    const std::string prefix =
        "tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv4\",outcome=\"established\",le=\"";
    for (double bound : {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                         1.0, 2.5, 5.0, 10.0}) {
      std::ostringstream label;
      label << bound;
      buckets.emplace_back(bound, series.at(prefix + label.str() + "\"}"));
    }
    buckets.emplace_back(INFINITY, series.at(prefix + "+Inf\"}"));
    ASSERT_EQ(buckets.back().second, 6);
    const double expected = histogram_quantile(0.5, buckets);
    const double p50 = query_value(prometheus_port,
                                   "histogram_quantile(0.5, sum by (le) (tcptrace_tcp_connect_latency_seconds_bucket"
                                   "{job=\"tcptrace\",outcome=\"established\"}))");
    EXPECT_NEAR(p50, expected, 1e-9);
    EXPECT_GT(p50, 0);
    EXPECT_LE(p50, 0.1) << "a loopback connect";

    // The README's fleet queries run and name the instance. rate() has a
    // value once two samples in its window differ: query until both have
    // one (a series with a positive value), then check them.
    const std::string p99_query =
        "histogram_quantile(0.99, sum by (le, instance) (rate(tcptrace_tcp_connect_latency_seconds_bucket[5m])))";
    const std::string refused_query =
        "sum by (instance) (rate(tcptrace_tcp_connects_total{outcome=\"refused\"}[1m]))";
    const auto positive = [](const json& result) {
      return result.size() == 1 && std::stod(result[0].at("value").at(1).get<std::string>()) > 0;
    };
    json p99 = prometheus_query(prometheus_port, p99_query);
    json refused_rate = prometheus_query(prometheus_port, refused_query);
    const auto deadline = std::chrono::steady_clock::now() + scaled(15s);
    while (!(positive(p99) && positive(refused_rate)) && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(100ms);
      p99 = prometheus_query(prometheus_port, p99_query);
      refused_rate = prometheus_query(prometheus_port, refused_query);
    }
    ASSERT_EQ(p99.size(), 1u) << p99;
    EXPECT_EQ(p99[0].at("metric").at("instance"), "127.0.0.1:" + std::to_string(run.metrics_port));
    const double p99_seconds = std::stod(p99[0].at("value").at(1).get<std::string>());
    EXPECT_GT(p99_seconds, 0) << p99;
    EXPECT_LE(p99_seconds, 0.1) << p99;
    ASSERT_EQ(refused_rate.size(), 1u) << refused_rate;
    EXPECT_GT(std::stod(refused_rate[0].at("value").at(1).get<std::string>()), 0);

    EXPECT_EQ(prometheus.stop(SIGTERM, 30s), 0) << prometheus.stderr_text();
  }
  EXPECT_FALSE(fs::exists(data_dir)) << "the server's data directory was removed";
  EXPECT_EQ(run.tool->stop(SIGINT), 0) << run.tool->stderr_text();
}

INSTANTIATE_TEST_SUITE_P(Where, MetricsPrometheus, ::testing::Values("kernel", "host"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// Through --web-config: Prometheus scrapes over HTTPS, trusting the
// certificate the test made and checking its name, with basic
// authentication; a second job with a wrong password is refused (up 0).
TEST(MetricsPrometheusWebConfig, RealServerScrapesThroughTlsAndBasicAuth) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  struct stat st {};
  if (::stat(kPrometheus, &st) != 0) {
    if (running_in_ci()) FAIL() << "CI=true: " << kPrometheus << " is missing (scripts/setup installs prometheus)";
    GTEST_SKIP() << kPrometheus << " is missing (Debian package prometheus)";
  }
  TempDir dir("tcptrace-prometheus");
  ASSERT_FALSE(dir.path().empty());
  const fs::path cert = dir.path() / "cert.pem";
  ASSERT_TRUE(make_certificate(cert, dir.path() / "key.pem", "tcptrace-node")) << "openssl req failed";
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  ASSERT_NE(crypt_gensalt_rn("$2y$", 10, nullptr, 0, setting, sizeof setting), nullptr);
  crypt_data data{};
  const char* hash = crypt_rn("scrape-pass", setting, &data, sizeof data);
  ASSERT_NE(hash, nullptr);
  std::ofstream(dir.path() / "web.yml") << "tls_server_config:\n"
                                           "  cert_file: cert.pem\n"
                                           "  key_file: key.pem\n"
                                           "basic_auth_users:\n"
                                           "  prometheus: "
                                        << hash << "\n";
  ConnlatMetricsRun run({"--web-config", (dir.path() / "web.yml").string()});
  ASSERT_NE(run.metrics_port, 0) << (run.tool ? run.tool->stderr_text() : "");

  const auto job = [&](const std::string& name, const std::string& password) {
    return "  - job_name: " + name +
           "\n"
           "    scheme: https\n"
           "    tls_config:\n"
           "      ca_file: " + cert.string() +
           "\n"
           "      server_name: tcptrace-node\n"
           "    basic_auth:\n"
           "      username: prometheus\n"
           "      password: " + password +
           "\n"
           "    static_configs:\n"
           "      - targets: ['127.0.0.1:" + std::to_string(run.metrics_port) + "']\n";
  };
  std::ofstream(dir.path() / "prometheus.yml") << "global:\n"
                                                  "  scrape_interval: 1s\n"
                                                  "  evaluation_interval: 1s\n"
                                                  "scrape_configs:\n"
                                               << job("tcptrace", "scrape-pass") << job("intruder", "guess");
  const uint16_t prometheus_port = free_loopback_port();
  ToolProcess prometheus({}, {"--config.file=" + (dir.path() / "prometheus.yml").string(),
                              "--storage.tsdb.path=" + (dir.path() / "data").string(),
                              "--web.listen-address=127.0.0.1:" + std::to_string(prometheus_port)},
                         kPrometheus);
  ASSERT_TRUE(prometheus.wait_for_stderr_line(
      line_ending_with(" msg=\"Server is ready to receive web requests.\""), 60s))
      << prometheus.stderr_text();
  const auto up = [&](const std::string& name) { return query_value(prometheus_port, "up{job=\"" + name + "\"}"); };
  for (int i = 0; i < 100 && !(up("tcptrace") == 1 && up("intruder") == 0); ++i) std::this_thread::sleep_for(100ms);
  ASSERT_EQ(up("tcptrace"), 1) << prometheus.stderr_text();
  EXPECT_EQ(up("intruder"), 0) << "a wrong password is refused";

  make_connects(run.listener.local_port(), 4, run.closed.port, 2);
  const auto connects_of = [&](const std::string& outcome) {
    return query_value(prometheus_port, "tcptrace_tcp_connects_total{job=\"tcptrace\",outcome=\"" + outcome + "\"}");
  };
  for (int i = 0; i < 150 && !(connects_of("established") == 4 && connects_of("refused") == 2); ++i) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(connects_of("established"), 4) << prometheus.stderr_text();
  EXPECT_EQ(connects_of("refused"), 2);
  EXPECT_TRUE(prometheus_query(prometheus_port, "tcptrace_build_info{job=\"intruder\"}").empty());
  EXPECT_EQ(prometheus.stop(SIGTERM, 30s), 0) << prometheus.stderr_text();
  EXPECT_EQ(run.tool->stop(SIGINT), 0) << run.tool->stderr_text();
}

// --watch with counting in the kernel: the edited version starts with empty
// maps, and what the old one counted stays in the metrics, once.
TEST(MetricsExport, WatchKeepsTheCountsOfTheReplacedVersion) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  TempDir dir("tcptrace-prometheus");
  ASSERT_FALSE(dir.path().empty());
  const fs::path program = dir.path() / "connlat.bpf.c";
  fs::copy_file(fs::path(TCPTRACE_SOURCE_DIR) / "programs" / "connlat.bpf.c", program);
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  ClosedPort closed{AF_INET};
  const std::string ports = std::to_string(listener.local_port()) + "," + std::to_string(closed.port);
  auto tool = start_ready({"--program-file", program.string(), "--watch", "--metrics", "127.0.0.1:0", "--output",
                           "none", "--dport", ports});
  ASSERT_TRUE(tool);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  ASSERT_NE(port, 0) << tool->stderr_text();
  // Counted by the first version and not scraped before it is replaced:
  // its maps are read a last time when it detaches. (connect() returns
  // after the state change that ends it, so the counts are in the maps.)
  make_connects(listener.local_port(), 2, closed.port, 1);
  { std::ofstream(program, std::ios::app) << "\n/* edited */\n"; }
  ASSERT_TRUE(tool->wait_for_stderr_line(line_starting_with("tcptrace-bcc: reloaded: "), 120s))
      << tool->stderr_text();
  EXPECT_EQ(aggregation_of(scrape(port)), "kernel");
  make_connects(listener.local_port(), 3, closed.port, 2);
  const auto series = scrape_until_values(port, {{"tcptrace_tcp_connects_total{outcome=\"established\"}", 5},
                                                 {"tcptrace_tcp_connects_total{outcome=\"refused\"}", 3}});
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"established\"}"), 5);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"refused\"}"), 3);
  EXPECT_EQ(series.at("tcptrace_events_total"), 8);
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  EXPECT_NE(tool->stderr_text().find("tcptrace-bcc: 8 events (counted in the kernel)"), std::string::npos)
      << tool->stderr_text();
}

// A program file that cannot count in the kernel: with --aggregate kernel a
// usage error before anything compiles, naming what it lacks; a metric
// declared on a field its events do not have, a runtime error at the
// declaration's line; each leaves nothing loaded.
TEST(MetricsExport, AggregateKernelNeedsAProgramThatCan) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  TempDir dir("tcptrace-prometheus");
  ASSERT_FALSE(dir.path().empty());
  const std::string source = "struct event { u32 pid; };\n"
                             "BPF_PERF_OUTPUT(events);\n"
                             "TRACEPOINT_PROBE(sock, inet_sock_set_state) {\n"
                             "    struct event e = {};\n"
                             "    e.pid = bpf_get_current_pid_tgid() >> 32;\n"
                             "    events.perf_submit(args, &e, sizeof(e));\n"
                             "    return 0;\n"
                             "}\n";
  const fs::path plain = dir.path() / "plain.bpf.c";
  const fs::path claims = dir.path() / "claims.bpf.c";
  std::ofstream(plain) << source;
  std::ofstream(claims) << "// tcptrace:metric counter t_total labels=nosuch help=\"events\"\n" << source;
  const std::set<uint32_t> programs_before = loaded_bpf_program_ids();

  ToolProcess refused({"--program-file", plain.string(), "--metrics", "127.0.0.1:0", "--output", "none",
                       "--aggregate", "kernel"});
  EXPECT_EQ(refused.wait_exit(scaled(120s)), 2);
  EXPECT_EQ(refused.stderr_text(),
            "tcptrace-bcc: --aggregate kernel: program plain cannot count in the kernel (it declares no "
            "tcptrace:metric)\n");
  EXPECT_EQ(refused.stdout_text(), "");

  ToolProcess no_output({"--program-file", claims.string(), "--metrics", "127.0.0.1:0", "--output", "none",
                         "--aggregate", "kernel"});
  EXPECT_EQ(no_output.wait_exit(scaled(120s)), 2);
  EXPECT_EQ(no_output.stderr_text(),
            "tcptrace-bcc: --aggregate kernel: program claims cannot count in the kernel (it has no "
            "'tcptrace:output' line)\n");

  ToolProcess missing({"--program-file", claims.string(), "--metrics", "127.0.0.1:0", "--output", "none"});
  EXPECT_EQ(missing.wait_exit(scaled(120s)), 1);
  EXPECT_NE(missing.stderr_text().find("tcptrace-bcc: " + claims.string() +
                                       ":1: metric t_total: the event struct has no field 'nosuch'\n"),
            std::string::npos)
      << missing.stderr_text();
  EXPECT_EQ(missing.stdout_text(), "");
  EXPECT_EQ(loaded_bpf_program_ids(), programs_before);
}

}  // namespace
}  // namespace tcptrace::testing
