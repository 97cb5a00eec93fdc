// The `connlat` program against real connects made by this test process:
// outcomes, errno, pid/comm of the caller, latency bounds (including a real
// one-second SYN retransmission forced with nftables), and the attach-method
// contract on this kernel.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <netinet/tcp.h>

#include <cstdlib>
#include <initializer_list>
#include <iostream>
#include <sstream>
#include <thread>

#include "attach_support.h"
#include "http_get.h"
#include "loopback.h"
#include "nft_tables.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

const std::set<std::string> kConnlatFields = {"time",  "ts_us",      "pid",     "comm",  "family",
                                              "saddr", "sport",      "daddr",   "dport", "latency_us",
                                              "outcome", "errno"};

std::unique_ptr<ToolProcess> start_connlat(std::vector<std::string> extra) {
  std::vector<std::string> args = {"--program", "connlat"};
  args.insert(args.end(), extra.begin(), extra.end());
  return start_ready(std::move(args));
}

std::vector<json> stop_and_collect(ToolProcess& tool) {
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(tool.stop(SIGINT), 0) << tool.stderr_text();
  return tool.events();
}

std::vector<json> for_port(const std::vector<json>& events, uint16_t dport) {
  std::vector<json> mine;
  for (const json& e : events) {
    std::set<std::string> keys;
    for (const auto& item : e.items()) keys.insert(item.key());
    EXPECT_EQ(keys, kConnlatFields) << e;
    if (e.at("dport") == dport) mine.push_back(e);
  }
  return mine;
}

// Connects with TCP_SYNCNT retransmissions at most (blocking).
int connect_with_syn_count(uint16_t port, int syn_count) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  setsockopt(s.fd(), IPPROTO_TCP, TCP_SYNCNT, &syn_count, sizeof syn_count);
  socklen_t len = 0;
  sockaddr_storage ss = loopback_address(AF_INET, port, len);
  return ::connect(s.fd(), reinterpret_cast<sockaddr*>(&ss), len) == 0 ? 0 : errno;
}

// The method named in the ready line: "ready: program connlat (attach: kfunc) ...".
std::string attach_method_in(const std::string& stderr_text) {
  const std::string key = "(attach: ";
  size_t at = stderr_text.find(key);
  if (at == std::string::npos) return "";
  at += key.size();
  return stderr_text.substr(at, stderr_text.find(')', at) - at);
}

// "P1,P2,..." for --dport.
std::string port_list(std::initializer_list<uint16_t> ports) {
  std::string list;
  for (uint16_t port : ports) list += (list.empty() ? "" : ",") + std::to_string(port);
  return list;
}

// A connlat process with `args`, its attach method requested (--attach
// unless "auto"), once ready. Where this kernel cannot attach the method the
// run is to be skipped (`skip` says why) or fails, as cannot_attach()
// decides; TCPTRACE_TEST_EXPECT_AUTO names the method auto must choose.
struct MethodRun {
  std::unique_ptr<ToolProcess> tool;  // null when it did not start (test failed) or is skipped
  std::string method;                 // from the ready line
  std::string skip;
};

MethodRun start_with_method(std::vector<std::string> args, const std::string& requested) {
  if (requested != "auto") {
    args.push_back("--attach");
    args.push_back(requested);
  }
  MethodRun run;
  const auto started = std::chrono::steady_clock::now();
  run.tool = std::make_unique<ToolProcess>(args);
  ToolProcess& tool = *run.tool;
  if (!tool.wait_until_ready(120s)) {
    const int status = tool.wait_exit(10s);
    const std::string err = tool.stderr_text();
    run.tool.reset();
    // An explicit method the kernel cannot do ends with status 1 and
    // "--attach METHOD: why" before anything is compiled.
    if (requested != "auto" && status == 1 && err.find("--attach " + requested + ": ") != std::string::npos) {
      const CannotAttach verdict = cannot_attach(requested, err);
      if (verdict.skip) {
        run.skip = verdict.message;
      } else {
        ADD_FAILURE() << verdict.message;
      }
      return run;
    }
    ADD_FAILURE() << "connlat did not become ready (exit status " << status << "):\n" << err;
    return run;
  }
  const auto ready_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
  ::testing::Test::RecordProperty("ms_to_ready", static_cast<int>(ready_ms));
  run.method = attach_method_in(tool.stderr_text());
  std::cout << "[   INFO   ] connlat (attach: " << run.method << ") ready after " << ready_ms << " ms" << std::endl;
  if (requested != "auto") {
    EXPECT_EQ(run.method, requested) << tool.stderr_text();
  } else if (const char* expected = std::getenv("TCPTRACE_TEST_EXPECT_AUTO")) {
    EXPECT_EQ(run.method, expected) << tool.stderr_text();
  }
  return run;
}

// Every attach method with one tool process (one compile: over a minute
// under the VM's software emulation) and the same traffic: established
// connects on 127.0.0.1 and ::1, refused connects on both, a connect whose
// SYNs nftables drops until it times out, and a connect to a port outside
// --dport. Where this kernel cannot attach a method the test skips, naming
// the VM test that runs it, or fails (cannot_attach());
// TCPTRACE_TEST_EXPECT_AUTO names the method auto must choose.
class ConnlatAttach : public ::testing::TestWithParam<std::string> {};

TEST_P(ConnlatAttach, ConnectOutcomes) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const std::string requested = GetParam();
  Socket listener4 = bind_loopback(AF_INET);
  Socket listener6 = bind_loopback(AF_INET6);
  Socket unlisted = bind_loopback(AF_INET);
  Socket unanswered = bind_loopback(AF_INET);
  for (const Socket* s : {&listener4, &listener6, &unlisted, &unanswered}) start_listening(*s);
  ClosedPort closed4(AF_INET);
  ClosedPort closed6(AF_INET6);
  SynRule drop(unanswered.local_port(), "drop");
  ASSERT_TRUE(drop.ok()) << "nft could not add the test table";

  const std::string dports = port_list(
      {listener4.local_port(), listener6.local_port(), closed4.port, closed6.port, unanswered.local_port()});
  MethodRun run = start_with_method({"--program", "connlat", "--dport", dports}, requested);
  if (!run.skip.empty()) GTEST_SKIP() << run.skip;
  ASSERT_TRUE(run.tool);
  ToolProcess& tool = *run.tool;
  const std::string& method = run.method;

  // The unanswered connect takes 3 s (SYN, one retransmission after the
  // initial RTO of 1 s, then 2 s more): it runs beside the others.
  int unanswered_error = 0;
  std::thread unanswered_client([&] { unanswered_error = connect_with_syn_count(unanswered.local_port(), 1); });
  uint16_t client4_port = 0, client6_port = 0;
  {
    Socket c4 = connect_loopback(AF_INET, listener4.local_port());
    EXPECT_GE(c4.fd(), 0);
    client4_port = c4.local_port();
    Socket c6 = connect_loopback(AF_INET6, listener6.local_port());
    EXPECT_GE(c6.fd(), 0);
    client6_port = c6.local_port();
  }
  EXPECT_LT(connect_loopback(AF_INET, closed4.port).fd(), 0);
  EXPECT_EQ(errno, ECONNREFUSED);
  EXPECT_LT(connect_loopback(AF_INET6, closed6.port).fd(), 0);
  EXPECT_EQ(errno, ECONNREFUSED);
  EXPECT_GE(connect_loopback(AF_INET, unlisted.local_port()).fd(), 0);
  unanswered_client.join();
  EXPECT_EQ(unanswered_error, ETIMEDOUT);
  const std::vector<json> events = stop_and_collect(tool);

  // The caller is this process, also for events the kernel handled in
  // softirq context (the SYN-ACK or RST).
  auto expect_caller = [&](const json& e, int family, const std::string& address, uint16_t dport) {
    EXPECT_EQ(e.at("pid"), getpid()) << e;
    EXPECT_EQ(e.at("comm"), own_comm()) << e;
    EXPECT_EQ(e.at("family"), family) << e;
    EXPECT_EQ(e.at("saddr"), address) << e;
    EXPECT_EQ(e.at("daddr"), address) << e;
    EXPECT_EQ(e.at("dport"), dport) << e;
  };
  for (const auto& [family, port, client_port, address] :
       {std::tuple{4, listener4.local_port(), client4_port, "127.0.0.1"},
        std::tuple{6, listener6.local_port(), client6_port, "::1"}}) {
    const std::vector<json> mine = for_port(events, port);
    ASSERT_EQ(mine.size(), 1u) << "established, family " << family << "\n" << tool.stderr_text();
    const json& e = mine[0];
    expect_caller(e, family, address, port);
    EXPECT_EQ(e.at("outcome"), "established") << e;
    EXPECT_EQ(e.at("errno"), 0) << e;
    EXPECT_EQ(e.at("sport"), client_port) << e;
    // A loopback handshake: more than nothing, far less than a second even
    // under software emulation.
    EXPECT_GT(e.at("latency_us").get<int64_t>(), 0) << e;
    EXPECT_LT(e.at("latency_us").get<int64_t>(), 1000000) << e;
  }
  for (const auto& [family, port, address] :
       {std::tuple{4, closed4.port, "127.0.0.1"}, std::tuple{6, closed6.port, "::1"}}) {
    const std::vector<json> mine = for_port(events, port);
    ASSERT_EQ(mine.size(), 1u) << "refused, family " << family << "\n" << tool.stderr_text();
    const json& e = mine[0];
    expect_caller(e, family, address, port);
    EXPECT_EQ(e.at("outcome"), "refused") << e;
    EXPECT_EQ(e.at("errno"), 111) << e;
    EXPECT_GE(e.at("latency_us").get<int64_t>(), 0) << e;
    EXPECT_LT(e.at("latency_us").get<int64_t>(), 1000000) << e;
  }
  EXPECT_EQ(for_port(events, unlisted.local_port()).size(), 0u) << "--dport must drop other ports";
  const std::vector<json> timed_out = for_port(events, unanswered.local_port());
  if (method == "tracepoint") {
    ASSERT_EQ(timed_out.size(), 1u) << tool.stderr_text();
    expect_caller(timed_out[0], 4, "127.0.0.1", unanswered.local_port());
    EXPECT_EQ(timed_out[0].at("outcome"), "timeout") << timed_out[0];
    EXPECT_EQ(timed_out[0].at("errno"), 110) << timed_out[0];
    EXPECT_GE(timed_out[0].at("latency_us").get<int64_t>(), 2500000) << timed_out[0];
    EXPECT_LE(timed_out[0].at("latency_us").get<int64_t>(), 4000000) << timed_out[0];
  } else {
    // kfunc and kprobe end a connect in tcp_rcv_state_process(), which a
    // connect that never gets an answer never reaches (README: attach methods).
    EXPECT_EQ(timed_out.size(), 0u) << timed_out.at(0);
  }
}

// Each method's variant that counts in the kernel (--output none
// --metrics): the same connects, counted exactly, read at scrape time.
TEST_P(ConnlatAttach, KernelCountsConnectOutcomes) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket listener4 = bind_loopback(AF_INET);
  Socket listener6 = bind_loopback(AF_INET6);
  Socket unlisted = bind_loopback(AF_INET);
  for (const Socket* s : {&listener4, &listener6, &unlisted}) start_listening(*s);
  ClosedPort closed4(AF_INET);
  ClosedPort closed6(AF_INET6);
  const std::string dports = port_list({listener4.local_port(), listener6.local_port(), closed4.port, closed6.port});
  MethodRun run = start_with_method(
      {"--program", "connlat", "--dport", dports, "--metrics", "127.0.0.1:0", "--output", "none"}, GetParam());
  if (!run.skip.empty()) GTEST_SKIP() << run.skip;
  ASSERT_TRUE(run.tool);
  ToolProcess& tool = *run.tool;
  EXPECT_NE(tool.stderr_text().find("(counting in the kernel)"), std::string::npos) << tool.stderr_text();
  const uint16_t port = served_metrics_port(tool.stderr_text());
  ASSERT_NE(port, 0) << tool.stderr_text();

  for (int i = 0; i < 3; ++i) EXPECT_GE(connect_loopback(AF_INET, listener4.local_port()).fd(), 0);
  EXPECT_GE(connect_loopback(AF_INET6, listener6.local_port()).fd(), 0);
  for (int i = 0; i < 2; ++i) EXPECT_LT(connect_loopback(AF_INET, closed4.port).fd(), 0);
  EXPECT_LT(connect_loopback(AF_INET6, closed6.port).fd(), 0);
  EXPECT_GE(connect_loopback(AF_INET, unlisted.local_port()).fd(), 0);

  // connect() returns after the state change that ends it: the counts are
  // in the maps, and a scrape reads them.
  const auto series = parse_exposition(http_get(port, "/metrics").body);
  const auto at = [&](const std::string& name) {
    const auto it = series.find(name);
    return it == series.end() ? -1.0 : it->second;
  };
  EXPECT_EQ(at("tcptrace_tcp_connects_total{outcome=\"established\"}"), 4);
  EXPECT_EQ(at("tcptrace_tcp_connects_total{outcome=\"refused\"}"), 3);
  EXPECT_EQ(at("tcptrace_events_total"), 7) << "--dport keeps the unlisted port out";
  EXPECT_EQ(at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv4\",outcome=\"established\"}"), 3);
  EXPECT_EQ(at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv6\",outcome=\"established\"}"), 1);
  EXPECT_EQ(at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv4\",outcome=\"refused\"}"), 2);
  EXPECT_EQ(at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv6\",outcome=\"refused\"}"), 1);
  // A loopback handshake takes well under a second, even under emulation.
  EXPECT_EQ(at("tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv4\",outcome=\"established\",le=\"1\"}"), 3);
  EXPECT_GT(at("tcptrace_tcp_connect_latency_seconds_sum{family=\"ipv4\",outcome=\"established\"}"), 0);
  EXPECT_EQ(tool.stop(SIGINT), 0) << tool.stderr_text();
  EXPECT_EQ(tool.stdout_text(), "");
  EXPECT_NE(tool.stderr_text().find("tcptrace-bcc: 7 events (counted in the kernel), 0 lost"), std::string::npos)
      << tool.stderr_text();
}

INSTANTIATE_TEST_SUITE_P(Methods, ConnlatAttach, ::testing::Values("kfunc", "kprobe", "tracepoint", "auto"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(Connlat, DroppedSynGivesOneSecondLatency) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  std::string table;
  {
    // `quota until 100 bytes` matches while fewer than 100 bytes went
    // through: the first SYN (60 bytes on IPv4) is dropped, its
    // retransmission after the initial RTO of 1 s (TCP_TIMEOUT_INIT) is not.
    SynRule drop(listener.local_port(), "quota until 100 bytes drop");
    ASSERT_TRUE(drop.ok()) << "nft could not add the test table";
    table = drop.table();
    auto tool = start_connlat({});
    ASSERT_TRUE(tool);
    Socket client = connect_loopback(AF_INET, listener.local_port());
    ASSERT_GE(client.fd(), 0);
    const std::vector<json> mine = for_port(stop_and_collect(*tool), listener.local_port());
    ASSERT_EQ(mine.size(), 1u);
    EXPECT_EQ(mine[0].at("outcome"), "established");
    const int64_t latency = mine[0].at("latency_us").get<int64_t>();
    EXPECT_GE(latency, 900000) << mine[0];
    EXPECT_LE(latency, 1300000) << mine[0];
  }
  EXPECT_FALSE(nft_table_exists(table)) << "the test's nftables table was left behind";
}

TEST(Connlat, IcmpHostUnreachableGivesUnreachable) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  std::string table;
  {
    SynRule reject(listener.local_port(), "reject with icmpx type host-unreachable");
    ASSERT_TRUE(reject.ok());
    table = reject.table();
    auto tool = start_connlat({});
    ASSERT_TRUE(tool);
    EXPECT_EQ(connect_with_syn_count(listener.local_port(), 1), EHOSTUNREACH);
    const std::vector<json> mine = for_port(stop_and_collect(*tool), listener.local_port());
    ASSERT_EQ(mine.size(), 1u) << tool->stderr_text();
    EXPECT_EQ(mine[0].at("outcome"), "unreachable") << mine[0];
    EXPECT_EQ(mine[0].at("errno"), 113) << mine[0];
    EXPECT_EQ(mine[0].at("pid"), getpid()) << mine[0];
  }
  EXPECT_FALSE(nft_table_exists(table));
}

// --min-us keeps a connect that took longer than the threshold (one whose
// first SYN nftables drops: it waits out the initial RTO of 1 s) and drops
// fast ones; failed connects are reported whatever their latency.
TEST(Connlat, MinUsKeepsSlowConnectsAndFailures) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  constexpr int64_t kMinUs = 500000;
  Socket fast_listener = bind_loopback(AF_INET);
  Socket slow_listener = bind_loopback(AF_INET);
  start_listening(fast_listener);
  start_listening(slow_listener);
  ClosedPort closed(AF_INET);
  // As in DroppedSynGivesOneSecondLatency: only the first SYN is dropped.
  SynRule drop(slow_listener.local_port(), "quota until 100 bytes drop");
  ASSERT_TRUE(drop.ok()) << "nft could not add the test table";
  auto tool = start_connlat({"--min-us", std::to_string(kMinUs)});
  ASSERT_TRUE(tool);
  for (int i = 0; i < 3; ++i) ASSERT_GE(connect_loopback(AF_INET, fast_listener.local_port()).fd(), 0);
  const auto slow_started = std::chrono::steady_clock::now();
  ASSERT_GE(connect_loopback(AF_INET, slow_listener.local_port()).fd(), 0);
  EXPECT_GE(std::chrono::steady_clock::now() - slow_started, 900ms) << "the first SYN was not dropped";
  EXPECT_LT(connect_loopback(AF_INET, closed.port).fd(), 0);
  const std::vector<json> events = stop_and_collect(*tool);
  EXPECT_EQ(for_port(events, fast_listener.local_port()).size(), 0u) << "fast connects are below --min-us";
  const std::vector<json> slow = for_port(events, slow_listener.local_port());
  ASSERT_EQ(slow.size(), 1u) << tool->stderr_text();
  EXPECT_EQ(slow[0].at("outcome"), "established") << slow[0];
  EXPECT_EQ(slow[0].at("pid"), getpid()) << slow[0];
  EXPECT_GE(slow[0].at("latency_us").get<int64_t>(), kMinUs) << slow[0];
  EXPECT_LE(slow[0].at("latency_us").get<int64_t>(), 1300000) << slow[0];
  const std::vector<json> refused = for_port(events, closed.port);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].at("outcome"), "refused") << refused[0];
}

// --no-failures alone, beside a run without it on the same connects: a
// refused connect is reported only by the run without it. --dport names
// both ports, so it keeps the refused connect and only keeps other traffic
// out.
TEST(Connlat, NoFailuresDropsRefusedConnects) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  ClosedPort closed(AF_INET);
  const std::string dports = port_list({listener.local_port(), closed.port});
  auto without = start_connlat({"--dport", dports});
  ASSERT_TRUE(without);
  auto with = start_connlat({"--dport", dports, "--no-failures"});
  ASSERT_TRUE(with);
  ASSERT_GE(connect_loopback(AF_INET, listener.local_port()).fd(), 0);
  EXPECT_LT(connect_loopback(AF_INET, closed.port).fd(), 0);
  EXPECT_EQ(errno, ECONNREFUSED);
  const std::vector<json> all = stop_and_collect(*without);
  const std::vector<json> kept = stop_and_collect(*with);

  const std::vector<json> refused = for_port(all, closed.port);
  ASSERT_EQ(refused.size(), 1u) << without->stderr_text();
  EXPECT_EQ(refused[0].at("outcome"), "refused") << refused[0];
  EXPECT_EQ(refused[0].at("errno"), 111) << refused[0];
  EXPECT_EQ(refused[0].at("pid"), getpid()) << refused[0];
  ASSERT_EQ(for_port(all, listener.local_port()).size(), 1u);

  EXPECT_EQ(for_port(kept, closed.port).size(), 0u) << "--no-failures must drop the refused connect";
  const std::vector<json> established = for_port(kept, listener.local_port());
  ASSERT_EQ(established.size(), 1u) << with->stderr_text();
  EXPECT_EQ(established[0].at("outcome"), "established") << established[0];
  EXPECT_EQ(established[0].at("pid"), getpid()) << established[0];
  EXPECT_EQ(kept.size(), 1u) << "--dport keeps other traffic out";
}

// --pid keeps the connects of that process only: a child's, not this
// process's (an established and a refused one).
TEST(Connlat, PidFilterKeepsOnlyThatProcess) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  ClosedPort closed(AF_INET);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  if (child == 0) {
    char go;
    if (read(ready[0], &go, 1) != 1) _exit(2);
    Socket c = connect_loopback(AF_INET, listener.local_port());
    _exit(c.fd() >= 0 ? 0 : 1);
  }
  close(ready[0]);
  auto tool = start_connlat({"--pid", std::to_string(child)});
  ASSERT_TRUE(tool);
  ASSERT_GE(connect_loopback(AF_INET, listener.local_port()).fd(), 0);
  EXPECT_LT(connect_loopback(AF_INET, closed.port).fd(), 0);
  ASSERT_EQ(write(ready[1], "g", 1), 1);
  close(ready[1]);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const std::vector<json> events = stop_and_collect(*tool);
  const std::vector<json> mine = for_port(events, listener.local_port());
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].at("pid"), child);
  EXPECT_EQ(for_port(events, closed.port).size(), 0u);
}

// --duration ends the run by itself, no sooner than that long after the
// ready line (the tool starts counting there) and without lingering; it
// exits 0 (README: exit status) with the summary and no "stopped by".
TEST(Connlat, DurationEndsTheRunAfterThatLong) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  constexpr auto kDuration = 2s;
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  auto tool = start_connlat({"--dport", std::to_string(listener.local_port()), "--duration", "2"});
  ASSERT_TRUE(tool);
  const auto ready_seen = std::chrono::steady_clock::now();
  ASSERT_GE(connect_loopback(AF_INET, listener.local_port()).fd(), 0);
  // Detaching, draining and the summary take well under a second (scaled,
  // as every wait, for the VM's software emulation).
  const int status = tool->wait_exit(kDuration + 3s);
  const auto elapsed = std::chrono::steady_clock::now() - ready_seen;
  ASSERT_NE(status, -1) << "still running 3 s after --duration ended";
  EXPECT_EQ(status, 0) << tool->stderr_text();
  EXPECT_GE(elapsed, kDuration);
  EXPECT_LE(elapsed, kDuration + scaled(1s));
  const std::vector<json> events = tool->events();
  ASSERT_EQ(events.size(), 1u) << tool->stdout_text();
  EXPECT_EQ(events[0].at("dport"), listener.local_port());
  const std::string err = tool->stderr_text();
  EXPECT_NE(err.find("\ntcptrace-bcc: 1 events, 0 lost (buffer), 0 skipped runs (recursion_misses)\n"),
            std::string::npos)
      << err;
  EXPECT_EQ(err.find("stopped by"), std::string::npos) << err;
}

TEST(Connlat, AutoPicksAMethodTheKernelCanAttach) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_connlat({});
  ASSERT_TRUE(tool);
  const std::string err = tool->stderr_text();
  EXPECT_EQ(tool->stop(SIGINT), 0);
  // This project's CI kernel has neither kprobes nor fentry: auto must fall
  // through to the tracepoints instead of failing like libbpf-tools does.
  if (!kernel_has_kprobes()) {
    EXPECT_NE(err.find("(attach: tracepoint)"), std::string::npos) << err;
  }
}

TEST(Connlat, ExplicitKprobeWithoutKernelSupportExitsOne) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  if (kernel_has_kprobes()) GTEST_SKIP() << "this kernel has kprobes (the VM test covers attaching them)";
  ToolProcess tool({"--program", "connlat", "--attach", "kprobe"});
  EXPECT_EQ(tool.wait_exit(60s), 1);
  EXPECT_EQ(tool.stdout_text(), "");
  const std::string err = tool.stderr_text();
  EXPECT_NE(err.find("--attach kprobe: this kernel has no kprobe support"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

TEST(Connlat, KprobeVariantPassesTheVerifier) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ToolProcess tool({"--program", "connlat", "--attach", "kprobe", "--check"});
  ASSERT_EQ(tool.wait_exit(120s), 0) << tool.stderr_text();
  const std::vector<json> reports = tool.events();
  ASSERT_EQ(reports.size(), 1u);
  const json& report = reports[0];
  EXPECT_EQ(report.at("attach_method"), "kprobe");
  std::set<std::string> targets;
  for (const json& probe : report.at("probes")) {
    EXPECT_EQ(probe.at("kind"), "kprobe") << probe;
    targets.insert(probe.at("target").get<std::string>());
  }
  EXPECT_EQ(targets, (std::set<std::string>{"tcp_v4_connect", "tcp_v6_connect", "tcp_rcv_state_process"}));
  std::set<std::string> fields;
  for (const json& field : report.at("outputs").at(0).at("fields")) fields.insert(field.at("name").get<std::string>());
  std::set<std::string> expected = kConnlatFields;
  expected.erase("time");  // added by the host
  EXPECT_EQ(fields, expected);
}

TEST(Connlat, KfuncVariantCompiles) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ToolProcess tool({"--program", "connlat", "--attach", "kfunc", "--check"});
  const int status = tool.wait_exit(120s);
  const std::string err = tool.stderr_text();
  EXPECT_EQ(err.find("did not compile"), std::string::npos) << err;
  if (status == 0) {
    EXPECT_EQ(tool.events().at(0).at("attach_method"), "kfunc");
  } else {
    // Where the kernel refuses the tracing program type (this project's CI
    // kernel), the compiled program reaches the kernel and is refused there.
    EXPECT_EQ(status, 1);
    EXPECT_NE(err.find("the kernel refused to load kfunc"), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace tcptrace::testing

namespace tcptrace::testing {
namespace {

TEST(Connlat, FamilyAndPortFilters) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket v4 = bind_loopback(AF_INET);
  Socket v6 = bind_loopback(AF_INET6);
  Socket v6_other = bind_loopback(AF_INET6);
  for (const Socket* s : {&v4, &v6, &v6_other}) start_listening(*s);
  auto tool = start_connlat({"-6", "--dport", std::to_string(v6.local_port()) + "," + std::to_string(v4.local_port())});
  ASSERT_TRUE(tool);
  ASSERT_GE(connect_loopback(AF_INET, v4.local_port()).fd(), 0);
  ASSERT_GE(connect_loopback(AF_INET6, v6.local_port()).fd(), 0);
  ASSERT_GE(connect_loopback(AF_INET6, v6_other.local_port()).fd(), 0);
  const std::vector<json> events = stop_and_collect(*tool);
  EXPECT_EQ(for_port(events, v4.local_port()).size(), 0u) << "-6 must drop the IPv4 connect";
  EXPECT_EQ(for_port(events, v6_other.local_port()).size(), 0u) << "--dport must drop other ports";
  const std::vector<json> mine = for_port(events, v6.local_port());
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].at("family"), 6);
}

}  // namespace
}  // namespace tcptrace::testing
