// How runs end and what they leave: SIGKILL leaves nothing loaded (the
// kernel releases programs with their last fd), and a consumer that falls
// behind loses events visibly, per CPU, while the run goes on.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <cerrno>
#include <cstring>
#include <thread>

#include "http_get.h"
#include "loopback.h"
#include "network_namespace.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::string fixture(const std::string& name) { return std::string(TCPTRACE_SOURCE_DIR) + "/tests/fixtures/" + name; }

// SIGKILL after "ready" leaves nothing: the kernel releases programs, maps
// and links with their last fd. The programs run on tracepoints and raw
// tracepoints here (a kprobe would also leave a tracefs event, which only
// the tool's own teardown removes).
class KilledAfterReady : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(KilledAfterReady, LeavesNothingLoaded) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const BpfObjectIds before = loaded_bpf_objects();
  auto tool = start_ready(GetParam());
  ASSERT_TRUE(tool);
  const BpfObjectIds running = loaded_bpf_objects();
  EXPECT_GT(running.programs.size(), before.programs.size()) << "the running tool has programs loaded";
  EXPECT_GT(running.maps.size(), before.maps.size()) << "and maps";
  EXPECT_EQ(tool->stop(SIGKILL), 128 + SIGKILL);
  EXPECT_EQ(wait_until_released(before), "") << "left in the kernel after SIGKILL";
}

INSTANTIATE_TEST_SUITE_P(
    Programs, KilledAfterReady,
    ::testing::Values(std::vector<std::string>{"--program", "states"}, std::vector<std::string>{"--program", "connlat"},
                      // raw tracepoints: attached through BPF links
                      std::vector<std::string>{"--program-file", fixture("nested_probe.bpf.c"), "-D", "PORT=1"}),
    [](const auto& info) {
      return info.param[0] == "--program" ? info.param[1] : std::string("nested_probe_links");
    });

// A signal at any moment of the start-up (compiling, loading, attaching,
// seeding) or just after it ends the run with nothing left loaded: before
// the tool handles SIGTERM it dies of it, after that it stops cleanly (0).
class SignalDuringStartup : public ::testing::TestWithParam<int> {};

TEST_P(SignalDuringStartup, LeavesNothingLoaded) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const int signal = GetParam();
  const std::vector<std::string> args = {"--program", "states", "--sport", "1"};  // no traffic: no event lines
  // How long the start-up takes on this machine now; the signals fall in
  // ten steps over it and one after it.
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(start_ready(args));
  const auto startup = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
  for (int step = 0; step <= 10; ++step) {
    const auto delay = startup * step / 10 + (step == 10 ? 200ms : 0ms);
    SCOPED_TRACE("signal after " + std::to_string(delay.count()) + " ms of a " + std::to_string(startup.count()) +
                 " ms start-up");
    const BpfObjectIds before = loaded_bpf_objects();
    ToolProcess tool(args);
    std::this_thread::sleep_for(delay);
    const int status = tool.stop(signal, scaled(60s));
    if (signal == SIGKILL) {
      EXPECT_EQ(status, 128 + SIGKILL);
    } else {
      EXPECT_TRUE(status == 128 + signal || status == 0) << "exit status " << status << "\n" << tool.stderr_text();
    }
    EXPECT_EQ(tool.stdout_text(), "");
    EXPECT_EQ(wait_until_released(before), "") << "left in the kernel\n" << tool.stderr_text();
  }
}

INSTANTIATE_TEST_SUITE_P(Signals, SignalDuringStartup, ::testing::Values(SIGTERM, SIGINT, SIGKILL),
                         [](const auto& info) {
                           return info.param == SIGTERM ? "SIGTERM" : info.param == SIGINT ? "SIGINT" : "SIGKILL";
                         });

TEST(Lifecycle, OverloadIsCountedPerCpuAndTheRunGoesOn) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ToolProcess tool({"--program", "states", "--buffer-pages", "1"});
  ASSERT_TRUE(tool.wait_until_ready(120s)) << tool.stderr_text();
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  // The consumer stops while the kernel keeps writing into one-page buffers.
  ASSERT_EQ(kill(tool.pid(), SIGSTOP), 0);
  for (int i = 0; i < 400; ++i) {
    Socket client = connect_loopback(AF_INET, listener.local_port());
    Socket server = accept_one(listener);
  }
  ASSERT_EQ(kill(tool.pid(), SIGCONT), 0);
  std::this_thread::sleep_for(500ms);

  // The host reads the program's loss counters every 0.5 s and reports what
  // they gained; new traffic after the loss shows the run goes on.
  const size_t lines_before = tool.stdout_lines().size();
  Socket late_listener = bind_loopback(AF_INET);
  start_listening(late_listener);
  for (int i = 0; i < 20; ++i) {
    Socket c = connect_loopback(AF_INET, late_listener.local_port());
    Socket s = accept_one(late_listener);
  }
  ASSERT_TRUE(tool.wait_for_stderr("lost ", 10s)) << tool.stderr_text();
  EXPECT_TRUE(std::regex_search(tool.stderr_text(), std::regex("lost [1-9][0-9]* events \\(CPU [0-9]+: [1-9][0-9]*")))
      << tool.stderr_text();
  ASSERT_TRUE(tool.wait_for_lines(lines_before + 3, 10s));
  ASSERT_EQ(tool.stop(SIGINT), 0) << tool.stderr_text();
  bool late_seen = false;
  for (const json& e : tool.events()) late_seen |= e.at("sport") == late_listener.local_port();
  EXPECT_TRUE(late_seen);
  // The summary repeats the total and its split by CPU.
  EXPECT_TRUE(std::regex_search(tool.stderr_text(),
                                std::regex("events, [1-9][0-9]* lost \\(buffer, CPU [0-9]+: [1-9][0-9]*")))
      << tool.stderr_text();
}

// The kernel's own count of TCP opens in the calling thread's network
// namespace (/proc/net/snmp, "Tcp:" header and value lines).
struct TcpOpens {
  uint64_t active = 0;
  uint64_t passive = 0;
};

TcpOpens read_tcp_opens() {
  std::ifstream snmp("/proc/thread-self/net/snmp");
  std::string header, values, line;
  while (std::getline(snmp, line)) {
    if (line.rfind("Tcp: ", 0) != 0) continue;
    if (header.empty()) {
      header = line;
    } else {
      values = line;
    }
  }
  std::istringstream names(header), numbers(values);
  std::string name, number;
  TcpOpens opens;
  while (names >> name && numbers >> number) {
    if (name == "ActiveOpens") opens.active = std::stoull(number);
    if (name == "PassiveOpens") opens.passive = std::stoull(number);
  }
  return opens;
}

// True when every socket on local port `port` in the calling thread's
// namespace is in TIME_WAIT (/proc/net/tcp state 06), or gone: the server
// side of each connection has made its last state change.
bool only_time_wait_left(uint16_t port) {
  std::ifstream table("/proc/thread-self/net/tcp");
  std::string line;
  std::getline(table, line);  // header
  char local_port[8];
  std::snprintf(local_port, sizeof local_port, ":%04X", port);
  while (std::getline(table, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    if (local.size() >= 5 && local.compare(local.size() - 5, 5, local_port) == 0 && state != "06") return false;
  }
  return true;
}

// Bursts of connections, each to a listener on a port of its own in a
// network namespace of the test's own, the first made while the tool's
// reader is stopped (SIGSTOP) so one-page buffers overflow. With --sport
// PORTS the tool sees only the server side: per burst the listener's CLOSE
// -> LISTEN and LISTEN -> CLOSE, and per connection LISTEN -> SYN_RECV (the
// child socket is cloned from the listener), SYN_RECV -> ESTABLISHED, then
// the server closes first: ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2, and
// FIN_WAIT2 -> CLOSE when the client's FIN moves it to TIME_WAIT
// (tcp_time_wait()).
class ConnectionBursts {
 public:
  static constexpr uint64_t kServerTransitionsPerConnection = 5;
  static constexpr uint64_t kListenerTransitions = 2;

  ConnectionBursts(const NetworkNamespace& ns, int bursts) : ns_(ns) {
    ns_.run_inside([&] {
      for (int i = 0; i < bursts; ++i) listeners_.push_back(bind_loopback(AF_INET));
    });
  }

  // What the bursts so far made the kernel count, and so the tool's events.
  uint64_t expected_events() const {
    return kServerTransitionsPerConnection * passive_opens_ + kListenerTransitions * bursts_;
  }

  // Starts the tool on the bursts' ports with `extra` options, stops its
  // reader, makes the first burst and resumes the reader. Returns the
  // running tool.
  // `while_stopped` runs once the reader is stopped, before the burst.
  std::unique_ptr<ToolProcess> start_stopped_burst(int connections, std::vector<std::string> extra,
                                                   const std::function<void(ToolProcess&)>& while_stopped = {}) {
    std::string ports;
    for (const Socket& listener : listeners_) ports += (ports.empty() ? "" : ",") + std::to_string(listener.local_port());
    std::vector<std::string> args = {"--program", "states", "--sport", ports, "--buffer-pages", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto tool = start_ready(args);
    if (!tool) return nullptr;
    EXPECT_EQ(kill(tool->pid(), SIGSTOP), 0);
    if (while_stopped) while_stopped(*tool);
    burst(connections);
    EXPECT_EQ(kill(tool->pid(), SIGCONT), 0);
    return tool;
  }

  // Listens on the next port, takes `connections` connections, closes them
  // all and the listener, and waits until each server side reached
  // TIME_WAIT. The kernel's PassiveOpens and ActiveOpens of the namespace
  // must each have grown by `connections`. `gap` paces the connections.
  void burst(int connections, std::chrono::milliseconds gap = std::chrono::milliseconds(0)) {
    ASSERT_LT(bursts_, listeners_.size());
    Socket& listener = listeners_[bursts_++];
    const uint16_t port = listener.local_port();
    ns_.run_inside([&] {
      const TcpOpens before = read_tcp_opens();
      start_listening(listener);
      for (int i = 0; i < connections; ++i) {
        Socket client = connect_loopback(AF_INET, port);
        ASSERT_GE(client.fd(), 0) << "connect: " << std::strerror(errno);
        Socket server = accept_one(listener);
        ASSERT_GE(server.fd(), 0) << "accept: " << std::strerror(errno);
        server.close();
        if (gap.count() > 0) std::this_thread::sleep_for(gap);
      }
      listener.close();
      const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
      while (!only_time_wait_left(port) && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(10ms);
      }
      EXPECT_TRUE(only_time_wait_left(port)) << "server sockets still closing";
      const TcpOpens after = read_tcp_opens();
      EXPECT_EQ(after.passive - before.passive, static_cast<uint64_t>(connections));
      EXPECT_EQ(after.active - before.active, static_cast<uint64_t>(connections));
      passive_opens_ += after.passive - before.passive;
    });
  }

 private:
  const NetworkNamespace& ns_;
  std::vector<Socket> listeners_;  // one bound port per burst
  uint64_t passive_opens_ = 0;
  size_t bursts_ = 0;
};

// "N events, L lost (buffer, ...)" of the summary line.
std::pair<uint64_t, uint64_t> summary_counts(const std::string& stderr_text) {
  std::smatch m;
  if (!std::regex_search(stderr_text, m, std::regex("tcptrace-bcc: ([0-9]+) events, ([0-9]+) lost \\(buffer"))) {
    ADD_FAILURE() << "no summary line in:\n" << stderr_text;
    return {0, 0};
  }
  return {std::stoull(m[1]), std::stoull(m[2])};
}

// What bpftool (an oracle independent of the tool) shows of program `id`:
// a JSON object, with "recursion_misses" when they are not zero; null when
// bpftool cannot show it.
json bpftool_prog_show(uint32_t id) {
  FILE* pipe = ::popen(("bpftool -j prog show id " + std::to_string(id) + " 2>/dev/null").c_str(), "r");
  if (pipe == nullptr) return nullptr;
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) text.append(buffer, n);
  if (::pclose(pipe) != 0) return nullptr;
  json info = json::parse(text, nullptr, false);
  return info.is_object() ? info : json(nullptr);
}

// Runs the kernel skipped are reported as they grow: a probe that nests in
// itself (tests/fixtures/nested_probe.bpf.c) is skipped once per state
// change on the port, and the summary's count equals the kernel's own
// recursion_misses of that program, read by bpftool before the tool exits.
TEST(Lifecycle, SkippedRunsEqualTheKernelsRecursionMisses) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket listener = bind_loopback(AF_INET);
  const uint16_t port = listener.local_port();
  const std::set<uint32_t> before = loaded_bpf_program_ids();
  auto tool = start_ready({"--program-file", fixture("nested_probe.bpf.c"), "-D", "PORT=" + std::to_string(port)});
  ASSERT_TRUE(tool);
  // The program of the raw tracepoint probe, among those the tool loaded.
  uint32_t nesting_program = 0;
  for (uint32_t id : loaded_bpf_program_ids()) {
    if (before.count(id)) continue;
    const json info = bpftool_prog_show(id);
    if (info.is_object() && info.value("type", "") == "raw_tracepoint") nesting_program = id;
  }
  ASSERT_NE(nesting_program, 0u) << "no raw_tracepoint program loaded by the tool";

  constexpr int kConnections = 50;
  start_listening(listener);
  for (int i = 0; i < kConnections; ++i) {
    Socket client = connect_loopback(AF_INET, port);
    ASSERT_GE(client.fd(), 0);
    Socket server = accept_one(listener);
    server.close();
  }
  listener.close();
  // Server side, as in ConnectionBursts: 5 changes per connection and the
  // listener's 2; each is one "changes" event and one "printks" event.
  const size_t changes = 5 * kConnections + 2;
  ASSERT_TRUE(tool->wait_for_lines(2 * changes, scaled(10s))) << tool->stdout_lines().size() << " lines";
  const json shown = bpftool_prog_show(nesting_program);
  ASSERT_TRUE(shown.is_object()) << "bpftool cannot show program " << nesting_program;
  const auto kernel_misses = shown.value("recursion_misses", uint64_t{0});
  EXPECT_EQ(kernel_misses, changes);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();

  size_t change_events = 0, printk_events = 0;
  for (const json& e : tool->events()) {
    change_events += e.at("event") == "changes";
    printk_events += e.at("event") == "printks";
  }
  EXPECT_EQ(change_events, changes);
  EXPECT_EQ(printk_events, changes);
  const std::string text = tool->stderr_text();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(text, m, std::regex("([0-9]+) skipped runs \\(recursion_misses\\)"))) << text;
  EXPECT_EQ(std::stoull(m[1]), kernel_misses);
  uint64_t reported = 0;
  const std::regex line("kernel skipped [0-9]+ runs \\(raw_tracepoint bpf_trace_printk: ([0-9]+); [0-9]+ in all\\): "
                        "recursion_misses");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line); it != std::sregex_iterator(); ++it) {
    reported += std::stoull((*it)[1]);
  }
  EXPECT_EQ(reported, kernel_misses);
}

class LossAccounting : public ::testing::TestWithParam<const char*> {};

// Every event the traffic made is either written or reported lost, for
// either buffer kind, even when the tool exits right after its reader
// resumes: a perf buffer reports its own losses only ahead of a later sample
// that fits, so its count must come from the program.
TEST_P(LossAccounting, WrittenPlusLostIsEveryEventAtExit) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  NetworkNamespace ns("tcptrace-loss-" + std::to_string(getpid()));
  ASSERT_TRUE(ns.created()) << "ip netns add failed";
  ConnectionBursts bursts(ns, 1);
  auto tool = bursts.start_stopped_burst(2000, {"--buffer", GetParam()});
  ASSERT_TRUE(tool);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  const auto [events, lost] = summary_counts(tool->stderr_text());
  EXPECT_EQ(events, tool->events().size()) << "the summary counts the lines written";
  EXPECT_GT(lost, 0u) << "one page per CPU cannot hold " << bursts.expected_events() << " events";
  EXPECT_EQ(events + lost, bursts.expected_events()) << tool->stderr_text();
  // The per-CPU reports add up to the summary.
  uint64_t reported = 0;
  const std::string text = tool->stderr_text();
  const std::regex line("lost ([0-9]+) events \\(CPU [^)]* in all\\): the (ring|perf) buffer was full");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line); it != std::sregex_iterator(); ++it) {
    reported += std::stoull((*it)[1]);
  }
  EXPECT_EQ(reported, lost);
}

// The lost-events metric says what the summary line says, and a loss is
// counted once: traffic after the overflow fits in the perf buffers again,
// so the kernel writes its own lost records ahead of it, which count the
// same failures the program counted.
TEST_P(LossAccounting, MetricEqualsTheSummaryAndNothingIsCountedTwice) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  NetworkNamespace ns("tcptrace-loss-" + std::to_string(getpid()));
  ASSERT_TRUE(ns.created()) << "ip netns add failed";
  ConnectionBursts bursts(ns, 2);
  auto tool = bursts.start_stopped_burst(500, {"--buffer", GetParam(), "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(tool);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  ASSERT_NE(port, 0) << tool->stderr_text();
  // Written and lost add up once the reader has drained the buffers and
  // read the program's counters (every 0.5 s).
  double written = 0, lost = 0;
  const auto scrape_until_complete = [&] {
    const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
    do {
      const auto series = parse_exposition(http_get(port, "/metrics").body);
      const auto value = [&](const std::string& name) { return series.count(name) ? series.at(name) : 0.0; };
      written = value("tcptrace_events_total");
      lost = value("tcptrace_lost_events_total{reason=\"buffer\"}");
      if (written + lost >= static_cast<double>(bursts.expected_events())) break;
      std::this_thread::sleep_for(50ms);
    } while (std::chrono::steady_clock::now() < deadline);
  };
  scrape_until_complete();
  ASSERT_EQ(written + lost, static_cast<double>(bursts.expected_events()));
  ASSERT_GT(lost, 0);
  // The late burst may overflow a page again (the reader polls every 100
  // ms); either way every event is written or lost exactly once.
  bursts.burst(20);
  scrape_until_complete();
  // Give a second count the time to show: two more looks at the counters.
  std::this_thread::sleep_for(1s);
  scrape_until_complete();
  EXPECT_EQ(written + lost, static_cast<double>(bursts.expected_events()));
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  const auto [summary_events, summary_lost] = summary_counts(tool->stderr_text());
  EXPECT_EQ(static_cast<double>(summary_lost), lost);
  EXPECT_EQ(static_cast<double>(summary_events), written);
  EXPECT_EQ(summary_events, tool->events().size());
}

// Fills the pipe that is the tool's stderr (the test holds its reading
// end) until it takes no more, through /proc/PID/fd/2.
void fill_stderr_pipe(pid_t pid) {
  const int fd = ::open(("/proc/" + std::to_string(pid) + "/fd/2").c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const std::string filler(4095, '#');
  const std::string line = filler + "\n";
  while (::write(fd, line.data(), line.size()) > 0) {
  }
  ::close(fd);
}

// A loss storm while nobody reads stderr: the loop goes on draining the
// buffers (later traffic is written, not lost), at most one loss line a
// second is made, and the summary still adds up exactly.
TEST_P(LossAccounting, StormWithAStderrNobodyReadsKeepsDraining) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  NetworkNamespace ns("tcptrace-loss-" + std::to_string(getpid()));
  ASSERT_TRUE(ns.created()) << "ip netns add failed";
  constexpr int kStorms = 8;
  std::vector<int> cpus;
  {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
    }
  }
  ConnectionBursts bursts(ns, 1 + kStorms + static_cast<int>(cpus.size()));
  const auto storm_started = std::chrono::steady_clock::now();
  auto tool = bursts.start_stopped_burst(2000, {"--buffer", GetParam()}, [](ToolProcess& stopped) {
    stopped.pause_stderr();
    fill_stderr_pipe(stopped.pid());
    // The reader thread may have taken one more read before it paused.
    std::this_thread::sleep_for(100ms);
    fill_stderr_pipe(stopped.pid());
  });
  ASSERT_TRUE(tool);
  // More storms, each while the reader is stopped for a moment.
  for (int i = 0; i < kStorms; ++i) {
    std::this_thread::sleep_for(200ms);
    ASSERT_EQ(kill(tool->pid(), SIGSTOP), 0);
    bursts.burst(300);
    ASSERT_EQ(kill(tool->pid(), SIGCONT), 0);
  }
  // Traffic that fits in the buffers reaches stdout: the loop still runs.
  // Paced (5 events every 20 ms, about 12 between two polls), so a loop
  // that drains loses none of it even in one-page buffers; a loop blocked
  // on stderr would write none. One burst on each CPU: a perf buffer
  // reports what it lost only in a record it writes with its next sample
  // (kernel/events/ring_buffer.c perf_output_begin), so every CPU whose
  // buffer overflowed needs one more event for the summary to add up.
  std::this_thread::sleep_for(500ms);
  const size_t lines_before = tool->stdout_lines().size();
  cpu_set_t before;
  ASSERT_EQ(sched_getaffinity(0, sizeof before, &before), 0);
  for (int cpu : cpus) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0) << "CPU " << cpu;
    bursts.burst(20, 20ms);  // its thread inherits this one's CPU
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof before, &before), 0);
  const size_t paced_events = 5 * 20 * cpus.size();
  EXPECT_TRUE(tool->wait_for_lines(lines_before + paced_events, scaled(10s)))
      << "the tool stopped draining: " << tool->stdout_lines().size() - lines_before << " new lines";
  const double storm_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - storm_started).count();
  tool->resume_stderr();
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text().substr(0, 2000);
  const std::string text = tool->stderr_text();
  const auto [events, lost] = summary_counts(text);
  EXPECT_GT(lost, 0u);
  EXPECT_EQ(events, tool->events().size());
  // Under a storm the kernel may also skip runs of the program (a softirq's
  // state change arriving while it runs on that CPU), which the summary
  // counts apart: those events are neither written nor lost in a buffer.
  // Skipped runs may belong to any socket on the machine, so they bound the
  // gap rather than fill it.
  std::smatch skipped_match;
  ASSERT_TRUE(std::regex_search(text, skipped_match, std::regex("([0-9]+) skipped runs \\(recursion_misses\\)")))
      << text.substr(0, 2000);
  const uint64_t skipped = std::stoull(skipped_match[1]);
  EXPECT_LE(events + lost, bursts.expected_events()) << text.substr(0, 2000);
  EXPECT_GE(events + lost + skipped, bursts.expected_events()) << text.substr(0, 2000);
  if (skipped == 0) {
    EXPECT_EQ(events + lost, bursts.expected_events()) << text.substr(0, 2000);
  }
  size_t loss_lines = 0;
  const std::regex line("tcptrace-bcc: lost [0-9]+ events \\(");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line); it != std::sregex_iterator(); ++it) ++loss_lines;
  // One a second, and the last one at exit.
  EXPECT_LE(loss_lines, static_cast<size_t>(storm_seconds) + 2) << "over " << storm_seconds << " s";
}

INSTANTIATE_TEST_SUITE_P(Buffers, LossAccounting, ::testing::Values("perf", "ringbuf"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace tcptrace::testing
