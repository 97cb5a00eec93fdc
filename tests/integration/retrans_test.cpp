// `retrans` against the kernel's own counts. Retransmissions are made on
// purpose between two network namespaces of the test's own, joined by a veth
// pair: nftables in the receiving namespace drops a share of the data
// segments (numgen random), on input, so the sender's transmit itself never
// fails. The segments retransmitted, as the tool reports them, must equal
// the kernel's TcpRetransSegs of each namespace (nstat, read inside it:
// nothing else sends there) and the server socket's own total (ss -ti
// "retrans:N/TOTAL"), exactly. The server is retrans_server.py, a process
// with a name of its own, so a bystander (the task a softirq or timer
// interrupted; on veth often this test process) would show up as the wrong
// owner.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <thread>

#include "http_get.h"
#include "kernel_btf.h"
#include "loopback.h"
#include "network_namespace.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kServerName = "retrans-srv";

// Runs `command` with sh and returns its stdout; fails the test on a
// non-zero status.
std::string output_of(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen: " << command;
    return out;
  }
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << command << "\n" << out;
  return out;
}

bool run(const std::string& command) {
  const int status = std::system(command.c_str());
  EXPECT_EQ(status, 0) << command;
  return status == 0;
}

// Two namespaces of the test's own, the server's and the client's, joined by
// a veth pair (veth0 in each; MTU 1500, TSO and GSO on, as veth has them).
// Addresses come from the pid, so no other namespace's traffic carries
// them.
class VethPair {
 public:
  explicit VethPair(int family)
      : family_(family),
        server_("tcptrace-rtx-s-" + std::to_string(getpid())),
        client_("tcptrace-rtx-c-" + std::to_string(getpid())) {
    const unsigned pid = static_cast<unsigned>(getpid());
    if (family == AF_INET6) {
      char prefix[32];
      std::snprintf(prefix, sizeof prefix, "fd74:7478:%x::", pid & 0xffff);
      server_address_ = std::string(prefix) + "1";
      client_address_ = std::string(prefix) + "2";
    } else {
      const std::string prefix = "10." + std::to_string((pid >> 8) & 0xff) + "." + std::to_string(pid & 0xff) + ".";
      server_address_ = prefix + "1";
      client_address_ = prefix + "2";
    }
    if (!server_.created() || !client_.created()) return;
    const std::string s = "ip -n " + server_.name() + " ";
    const std::string c = "ip -n " + client_.name() + " ";
    const std::string bits = family == AF_INET6 ? "/64 nodad" : "/24";
    ok_ = run(s + "link add veth0 type veth peer name veth0 netns " + client_.name()) &&
          run(s + "addr add " + server_address_ + bits + " dev veth0") &&
          run(c + "addr add " + client_address_ + bits + " dev veth0") && run(s + "link set veth0 up") &&
          run(c + "link set veth0 up");
  }

  bool ok() const { return ok_; }
  int family() const { return family_; }
  const NetworkNamespace& server() const { return server_; }
  const NetworkNamespace& client() const { return client_; }
  const std::string& server_address() const { return server_address_; }
  const std::string& client_address() const { return client_address_; }

  // nftables in `ns`: one table, `rule` in its input chain.
  static bool add_input_rule(const NetworkNamespace& ns, const std::string& rule) {
    return run("ip netns exec " + ns.name() +
               " nft 'add table inet rtx; add chain inet rtx input { type filter hook input priority 0; "
               "policy accept; }; add rule inet rtx input " +
               rule + "'");
  }
  static bool remove_rules(const NetworkNamespace& ns) {
    return run("ip netns exec " + ns.name() + " nft delete table inet rtx");
  }

  // A counter of the kernel's in a namespace, as nstat reads it there
  // (absolute, without touching nstat's history).
  static uint64_t nstat(const NetworkNamespace& ns, const std::string& counter) {
    const std::string out = output_of("ip netns exec " + ns.name() + " nstat -asz " + counter);
    std::smatch m;
    if (!std::regex_search(out, m, std::regex(counter + "\\s+([0-9]+)"))) {
      ADD_FAILURE() << "no " << counter << " in: " << out;
      return 0;
    }
    return std::stoull(m[1]);
  }
  // The kernel's own count of the segments it retransmitted.
  static uint64_t retrans_segs(const NetworkNamespace& ns) { return nstat(ns, "TcpRetransSegs"); }
  uint64_t retrans_segs_both() const { return retrans_segs(server_) + retrans_segs(client_); }

  // A socket connected from the client's namespace to the server.
  Socket connect_client(uint16_t port) const {
    Socket s;
    client_.run_inside([&] {
      s = Socket(::socket(family_, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_storage ss{};
      socklen_t len = 0;
      if (family_ == AF_INET6) {
        auto& a = reinterpret_cast<sockaddr_in6&>(ss);
        a.sin6_family = AF_INET6;
        inet_pton(AF_INET6, server_address_.c_str(), &a.sin6_addr);
        a.sin6_port = htons(port);
        len = sizeof a;
      } else {
        auto& a = reinterpret_cast<sockaddr_in&>(ss);
        a.sin_family = AF_INET;
        inet_pton(AF_INET, server_address_.c_str(), &a.sin_addr);
        a.sin_port = htons(port);
        len = sizeof a;
      }
      if (::connect(s.fd(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        ADD_FAILURE() << "connect to " << server_address_ << " port " << port << ": " << std::strerror(errno);
        s.close();
      }
      timeval timeout{20, 0};
      setsockopt(s.fd(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    });
    return s;
  }

 private:
  int family_;
  NetworkNamespace server_;
  NetworkNamespace client_;
  std::string server_address_;
  std::string client_address_;
  bool ok_ = false;
};

struct Server {
  std::unique_ptr<ToolProcess> process;
  uint16_t port = 0;
  pid_t pid = 0;
};

// retrans_server.py in the server's namespace.
Server start_server(const VethPair& net, size_t bytes, uint16_t port = 0) {
  Server server;
  const std::string script = std::string(TCPTRACE_SOURCE_DIR) + "/tests/integration/retrans_server.py";
  server.process = std::make_unique<ToolProcess>(
      std::vector<std::string>{"ip", "netns", "exec", net.server().name(), "python3"},
      std::vector<std::string>{"--address", net.server_address(), "--port", std::to_string(port), "--name",
                               kServerName, "--bytes", std::to_string(bytes)},
      script);
  if (!server.process->wait_for_lines(1, 20s)) {
    ADD_FAILURE() << "retrans_server.py did not start: " << server.process->stderr_text();
    return server;
  }
  const json line = json::parse(server.process->stdout_lines().at(0));
  server.port = line.at("port").get<uint16_t>();
  server.pid = line.at("pid").get<pid_t>();
  return server;
}

// Drops about one in `one_in` of the server's data segments (GSO packets as
// veth passes them) as they arrive in the client's namespace; pure ACKs,
// the SYN-ACK, FIN and one-byte answers are shorter than 200 bytes and pass.
bool drop_server_data(const VethPair& net, uint16_t port, int one_in) {
  return VethPair::add_input_rule(net.client(), "tcp sport " + std::to_string(port) +
                                                    " meta length > 200 numgen random mod " +
                                                    std::to_string(one_in) + " == 0 drop");
}

// The socket's total retransmitted segments, as `ss -ti` shows them
// ("retrans:OUT/TOTAL", left out while there were none).
uint64_t ss_total_retrans(const VethPair& net, uint16_t port) {
  const std::string out = output_of("ip netns exec " + net.server().name() +
                                    " ss -tinH state established '( sport = :" + std::to_string(port) + " )'");
  EXPECT_NE(out.find(":" + std::to_string(port)), std::string::npos) << "no such socket: " << out;
  std::smatch m;
  if (!std::regex_search(out, m, std::regex("retrans:[0-9]+/([0-9]+)"))) return 0;
  return std::stoull(m[1]);
}

// Asks for `bytes`, reads them all, says so and waits for the answer: the
// server has then seen the acknowledgment of every byte, so its socket has
// nothing left to retransmit.
void fetch(const Socket& client, size_t bytes) {
  ASSERT_EQ(::send(client.fd(), "g", 1, 0), 1);
  std::vector<char> buffer(1 << 16);
  size_t got = 0;
  while (got < bytes) {
    const ssize_t n = ::recv(client.fd(), buffer.data(), buffer.size(), 0);
    ASSERT_GT(n, 0) << "after " << got << " of " << bytes << " bytes: " << std::strerror(errno);
    got += static_cast<size_t>(n);
  }
  ASSERT_EQ(got, bytes);
  ASSERT_EQ(::send(client.fd(), "d", 1, 0), 1);
  char answer = 0;
  ASSERT_EQ(::recv(client.fd(), &answer, 1, 0), 1);
  ASSERT_EQ(answer, 'k');
}

// Events between the test's two addresses.
std::vector<json> ours(const std::vector<json>& events, const VethPair& net) {
  std::vector<json> mine;
  const std::set<std::string> addresses = {net.server_address(), net.client_address()};
  for (const json& e : events) {
    if (e.contains("saddr") && addresses.count(e.at("saddr").get<std::string>()) > 0 &&
        addresses.count(e.at("daddr").get<std::string>()) > 0) {
      mine.push_back(e);
    }
  }
  return mine;
}

uint64_t segments(const std::vector<json>& events) {
  uint64_t sum = 0;
  for (const json& e : events) sum += e.at("segs").get<uint64_t>();
  return sum;
}

// The server's side of the flow.
std::vector<json> server_side(const std::vector<json>& events, const VethPair& net, uint16_t port) {
  std::vector<json> side;
  for (const json& e : events) {
    if (e.at("saddr") == net.server_address() && e.at("sport") == port) side.push_back(e);
  }
  return side;
}

std::string summary_of(const std::vector<json>& events) {
  std::map<uint64_t, size_t> by_segs;
  for (const json& e : events) ++by_segs[e.at("segs").get<uint64_t>()];
  std::string text = std::to_string(events.size()) + " lines, " + std::to_string(segments(events)) + " segments;";
  for (const auto& [segs, lines] : by_segs) text += " " + std::to_string(lines) + "x" + std::to_string(segs);
  return text;
}

constexpr size_t kBytes = 8 << 20;
constexpr int kDropOneIn = 25;

class RetransFamilies : public ::testing::TestWithParam<int> {};

// A connection older than the tool (its owner seeded from the socket
// table) fetches 8 MiB while a share of the server's data is dropped.
TEST_P(RetransFamilies, SegmentsEqualTheKernelsCounts) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  VethPair net(GetParam());
  ASSERT_TRUE(net.ok());
  Server server = start_server(net, kBytes);
  ASSERT_NE(server.port, 0);
  Socket client = net.connect_client(server.port);
  ASSERT_GE(client.fd(), 0);
  const uint16_t client_port = client.local_port();

  auto tool = start_ready({"--program", "retrans"});
  ASSERT_TRUE(tool);
  // The owner filter keeps exactly the server's side.
  auto by_pid = start_ready({"--program", "retrans", "--pid", std::to_string(server.pid)});
  ASSERT_TRUE(by_pid);
  const uint64_t server_before = VethPair::retrans_segs(net.server());
  const uint64_t client_before = VethPair::retrans_segs(net.client());
  ASSERT_TRUE(drop_server_data(net, server.port, kDropOneIn));
  fetch(client, kBytes);
  const uint64_t socket_total = ss_total_retrans(net, server.port);
  ASSERT_TRUE(VethPair::remove_rules(net.client()));
  client.close();
  // Both sides close; nothing they send now is dropped.
  std::this_thread::sleep_for(300ms);
  const uint64_t server_count = VethPair::retrans_segs(net.server()) - server_before;
  const uint64_t client_count = VethPair::retrans_segs(net.client()) - client_before;
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  ASSERT_EQ(by_pid->stop(SIGINT), 0) << by_pid->stderr_text();

  const std::vector<json> events = ours(tool->events(), net);
  const std::vector<json> server_events = server_side(events, net, server.port);
  std::cout << "server: TcpRetransSegs " << server_count << ", ss total " << socket_total << "; "
            << summary_of(server_events) << "; client: TcpRetransSegs " << client_count << "\n";
  EXPECT_GT(server_count, 10u) << "dropping one in " << kDropOneIn << " data segments made few retransmissions";
  EXPECT_EQ(segments(server_events), server_count);
  EXPECT_EQ(segments(server_events), socket_total);
  EXPECT_EQ(segments(events) - segments(server_events), client_count);
  const int family = GetParam() == AF_INET6 ? 6 : 4;
  for (const json& e : server_events) {
    EXPECT_EQ(e.at("kind"), "retransmit") << e;
    EXPECT_EQ(e.at("state"), "ESTABLISHED") << e;
    EXPECT_EQ(e.at("family"), family) << e;
    EXPECT_EQ(e.at("daddr"), net.client_address()) << e;
    EXPECT_EQ(e.at("dport"), client_port) << e;
    EXPECT_EQ(e.at("pid"), server.pid) << "the owner, seeded from the socket table: " << e;
    EXPECT_EQ(e.at("comm"), kServerName) << e;
    EXPECT_GE(e.at("segs").get<int>(), 1) << e;
    EXPECT_TRUE(e.contains("time") && e.contains("ts_us") && e.contains("skaddr")) << e;
  }
  const std::vector<json> owner_events = ours(by_pid->events(), net);
  EXPECT_EQ(owner_events.size(), server_events.size()) << "--pid keeps the owner's lines, and only those";
  EXPECT_EQ(segments(owner_events), segments(server_events));
  for (const json& e : owner_events) EXPECT_EQ(e.at("pid"), server.pid) << e;
}

INSTANTIATE_TEST_SUITE_P(Retrans, RetransFamilies, ::testing::Values(AF_INET, AF_INET6),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == AF_INET6 ? "IPv6" : "IPv4";
                         });

// A listener resends its SYN-ACK while the client's handshake ACK is
// dropped: kind synack, the request socket's state, the listener's owner
// (seeded: the server started before the tool), one segment each.
TEST(Retrans, SynAckRetransmissionsAreKindSynack) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  VethPair net(AF_INET);
  ASSERT_TRUE(net.ok());
  Server server = start_server(net, 1);
  ASSERT_NE(server.port, 0);
  auto tool = start_ready({"--program", "retrans"});
  ASSERT_TRUE(tool);
  const uint64_t before = net.retrans_segs_both();
  // Everything the client sends to the server but its SYN.
  ASSERT_TRUE(VethPair::add_input_rule(
      net.server(), "tcp dport " + std::to_string(server.port) + " tcp flags & (syn|rst) == 0 drop"));
  Socket client = net.connect_client(server.port);  // established on the client's side at the SYN-ACK
  ASSERT_GE(client.fd(), 0);
  const uint16_t client_port = client.local_port();
  // The first SYN-ACK is resent after a second (TCP_TIMEOUT_INIT).
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  while (VethPair::retrans_segs(net.server()) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(VethPair::remove_rules(net.server()));
  ASSERT_EQ(::send(client.fd(), "s", 1, 0), 1);
  char answer = 0;
  ASSERT_EQ(::recv(client.fd(), &answer, 1, 0), 1);
  EXPECT_EQ(answer, 'x');
  client.close();
  std::this_thread::sleep_for(300ms);
  const uint64_t server_count = VethPair::retrans_segs(net.server());
  const uint64_t count = net.retrans_segs_both() - before;
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();

  const std::vector<json> events = ours(tool->events(), net);
  std::cout << "TcpRetransSegs: server " << server_count << ", both " << count << "; " << summary_of(events) << "\n";
  ASSERT_GE(server_count, 1u);
  EXPECT_EQ(segments(events), count);
  size_t synacks = 0;
  for (const json& e : events) {
    if (e.at("kind") != "synack") continue;
    ++synacks;
    EXPECT_EQ(e.at("state"), "NEW_SYN_RECV") << e;
    EXPECT_EQ(e.at("family"), 4) << e;
    EXPECT_EQ(e.at("saddr"), net.server_address()) << e;
    EXPECT_EQ(e.at("sport"), server.port) << e;
    EXPECT_EQ(e.at("daddr"), net.client_address()) << e;
    EXPECT_EQ(e.at("dport"), client_port) << e;
    EXPECT_EQ(e.at("segs"), 1) << e;
    EXPECT_EQ(e.at("pid"), server.pid) << "the listener's owner: " << e;
    EXPECT_EQ(e.at("comm"), kServerName) << e;
  }
  EXPECT_EQ(synacks, server_count) << "every segment the server resent was a SYN-ACK";
}

// Since Linux 6.17 tcp_retransmit_skb fires also for an attempt that sent
// nothing, with the record's err set: here the earlier copy of the segment
// is still queued in the sender's own qdisc when a tail loss probe resends
// it (-EBUSY; the kernel counts TCPSpuriousRtxHostQueues, not
// TcpRetransSegs). tbf slows the server's veth from 20 Mbit/s to 300 kbit/s
// 30 ms into a 1 MB transfer, so its queue holds seconds of data. Measured
// here, 6 transfers out of 6 made the kernel count one or more such
// attempts (30 ms; 4 of 6 at 100 ms), so the test makes up to five until
// one does. Whatever the kernel, what retrans reports equals
// TcpRetransSegs.
TEST(Retrans, AttemptsStillQueuedInTheHostAreNotRetransmissions) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  VethPair net(AF_INET);
  ASSERT_TRUE(net.ok());
  const std::string tbf = "ip netns exec " + net.server().name() + " tc qdisc ";
  ASSERT_TRUE(run(tbf + "add dev veth0 root tbf rate 20mbit burst 20kb latency 20s"));
  constexpr size_t kBytesPerTransfer = 1000000;
  Server server = start_server(net, kBytesPerTransfer);
  ASSERT_NE(server.port, 0);
  auto tool = start_ready({"--program", "retrans"});
  ASSERT_TRUE(tool);
  const auto still_queued = [&] { return VethPair::nstat(net.server(), "TcpExtTCPSpuriousRtxHostQueues"); };
  int transfers = 0;
  while (transfers < 5 && still_queued() == 0) {
    ++transfers;
    Socket client = net.connect_client(server.port);
    ASSERT_GE(client.fd(), 0);
    std::thread fetching([&] { fetch(client, kBytesPerTransfer); });
    std::this_thread::sleep_for(30ms);
    EXPECT_TRUE(run(tbf + "change dev veth0 root tbf rate 300kbit burst 20kb latency 20s"));
    const auto deadline = std::chrono::steady_clock::now() + scaled(3s);
    while (still_queued() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
    EXPECT_TRUE(run(tbf + "change dev veth0 root tbf rate 20mbit burst 20kb latency 20s"));
    fetching.join();
  }
  std::this_thread::sleep_for(300ms);
  const uint64_t queued = still_queued();
  const uint64_t count = net.retrans_segs_both();
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  const std::vector<json> events = ours(tool->events(), net);
  std::cout << transfers << " transfers: TCPSpuriousRtxHostQueues " << queued << ", TcpRetransSegs " << count << "; "
            << summary_of(events) << "\n";
  EXPECT_GT(queued, 0u) << "no retransmission found its segment still queued in the host";
  EXPECT_EQ(segments(events), count);
}

// Sum of the counter's series whose labels contain `labels`.
double counter_sum(const std::map<std::string, double>& series, const std::string& labels = "") {
  double sum = 0;
  for (const auto& [name, value] : series) {
    if (name.rfind("tcptrace_tcp_retransmits_total{", 0) == 0 && name.find(labels) != std::string::npos) sum += value;
  }
  return sum;
}

// --metrics from the JSON lines (host) equals the lines' segments, series by
// series; with --output none, counted in the kernel, it equals the server
// namespace's TcpRetransSegs. The server starts after both tools, so its
// owner is learnt from listen().
TEST(Retrans, MetricsEqualTheLinesAndKernelCountsEqualNstat) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  VethPair net(AF_INET);
  ASSERT_TRUE(net.ok());
  const uint16_t port = static_cast<uint16_t>(20000 + getpid() % 20000);
  auto host = start_ready({"--program", "retrans", "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(host);
  auto kernel = start_ready(
      {"--program", "retrans", "--metrics", "127.0.0.1:0", "--output", "none", "--sport", std::to_string(port)});
  ASSERT_TRUE(kernel);
  EXPECT_NE(kernel->stderr_text().find("(counting in the kernel)"), std::string::npos) << kernel->stderr_text();
  const uint16_t host_port = served_metrics_port(host->stderr_text());
  const uint16_t kernel_port = served_metrics_port(kernel->stderr_text());
  ASSERT_NE(host_port, 0);
  ASSERT_NE(kernel_port, 0);

  Server server = start_server(net, kBytes, port);
  ASSERT_EQ(server.port, port);
  Socket client = net.connect_client(port);
  ASSERT_GE(client.fd(), 0);
  ASSERT_TRUE(drop_server_data(net, port, kDropOneIn));
  fetch(client, kBytes);
  ASSERT_TRUE(VethPair::remove_rules(net.client()));
  client.close();
  std::this_thread::sleep_for(300ms);
  const uint64_t server_count = VethPair::retrans_segs(net.server());
  ASSERT_GT(server_count, 0u);

  // The host's series against its own lines (all of them: other traffic of
  // this machine counts in both), once the lines are out.
  const std::string established = "family=\"ipv4\",kind=\"retransmit\",state=\"ESTABLISHED\"";
  std::map<std::string, double> series;
  uint64_t lines_segments = 0;
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  do {
    std::this_thread::sleep_for(200ms);
    lines_segments = segments(host->events());
    series = parse_exposition(http_get(host_port, "/metrics").body);
  } while (counter_sum(series) != static_cast<double>(lines_segments) &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(counter_sum(series), static_cast<double>(lines_segments));
  uint64_t established_segments = 0;
  for (const json& e : host->events()) {
    if (e.at("family") == 4 && e.at("kind") == "retransmit" && e.at("state") == "ESTABLISHED") {
      established_segments += e.at("segs").get<uint64_t>();
    }
  }
  EXPECT_EQ(series.at("tcptrace_tcp_retransmits_total{" + established + "}"), established_segments);
  const std::vector<json> server_events = server_side(ours(host->events(), net), net, port);
  EXPECT_EQ(segments(server_events), server_count);
  for (const json& e : server_events) {
    EXPECT_EQ(e.at("pid"), server.pid) << "the owner, learnt from listen(): " << e;
    EXPECT_EQ(e.at("comm"), kServerName) << e;
  }

  // In the kernel, the server's side only (--sport).
  double counted = 0;
  const auto kernel_deadline = std::chrono::steady_clock::now() + scaled(10s);
  do {
    series = parse_exposition(http_get(kernel_port, "/metrics").body);
    counted = counter_sum(series);
    if (counted >= static_cast<double>(server_count)) break;
    std::this_thread::sleep_for(100ms);
  } while (std::chrono::steady_clock::now() < kernel_deadline);
  EXPECT_EQ(counted, static_cast<double>(server_count));
  EXPECT_EQ(series.at("tcptrace_tcp_retransmits_total{" + established + "}"), server_count);
  EXPECT_EQ(series.at("tcptrace_program_info{aggregation=\"kernel\",attach=\"\",buffer=\"none\",program=\"retrans\"}"),
            1);
  ASSERT_EQ(host->stop(SIGINT), 0) << host->stderr_text();
  ASSERT_EQ(kernel->stop(SIGINT), 0) << kernel->stderr_text();
  EXPECT_NE(kernel->stderr_text().find("events (counted in the kernel)"), std::string::npos) << kernel->stderr_text();
  EXPECT_EQ(kernel->stdout_text(), "");
  std::cout << "server: TcpRetransSegs " << server_count << "; host lines " << summary_of(server_events)
            << "; kernel-counted " << counted << "\n";
}

// -D COUNT_FLOWS=1: no line per retransmission; the flow's segments in the
// `flows` table, cleared after each --interval print (their sum is the
// kernel's count), or kept with --accumulate (the last print is).
TEST(Retrans, CountModeCountsSegmentsPerFlow) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  VethPair net(AF_INET);
  ASSERT_TRUE(net.ok());
  Server server = start_server(net, kBytes);
  ASSERT_NE(server.port, 0);
  auto per_interval = start_ready({"--program", "retrans", "-D", "COUNT_FLOWS=1", "--interval", "0.5"});
  ASSERT_TRUE(per_interval);
  EXPECT_NE(per_interval->stderr_text().find("tables read every 0.5 s and at the end: flows (counts, cleared after "
                                             "each print)"),
            std::string::npos)
      << per_interval->stderr_text();
  auto accumulated = start_ready({"--program", "retrans", "-D", "COUNT_FLOWS=1", "--accumulate", "--sport",
                                  std::to_string(server.port)});
  ASSERT_TRUE(accumulated);
  Socket client = net.connect_client(server.port);
  ASSERT_GE(client.fd(), 0);
  const uint16_t client_port = client.local_port();
  ASSERT_TRUE(drop_server_data(net, server.port, kDropOneIn));
  fetch(client, kBytes);
  ASSERT_TRUE(VethPair::remove_rules(net.client()));
  client.close();
  std::this_thread::sleep_for(1s);  // two prints of the first tool
  const uint64_t server_count = VethPair::retrans_segs(net.server());
  ASSERT_EQ(per_interval->stop(SIGINT), 0) << per_interval->stderr_text();
  ASSERT_EQ(accumulated->stop(SIGINT), 0) << accumulated->stderr_text();

  const json flow = {{"family", 4},
                     {"saddr", net.server_address()},
                     {"sport", server.port},
                     {"daddr", net.client_address()},
                     {"dport", client_port}};
  uint64_t summed = 0;
  size_t prints = 0;
  for (const json& line : per_interval->events()) {
    ASSERT_EQ(line.at("event"), "flows") << "a table line, never one per retransmission: " << line;
    ++prints;
    for (const json& entry : line.at("entries")) {
      if (entry.at("key") == flow) summed += entry.at("value").get<uint64_t>();
    }
  }
  EXPECT_GE(prints, 3u) << "prints every 0.5 s and one at the end";
  EXPECT_GT(server_count, 0u);
  EXPECT_EQ(summed, server_count);
  const std::vector<json> totals = accumulated->events();
  ASSERT_EQ(totals.size(), 1u) << "without --interval, one print at the end";
  ASSERT_EQ(totals[0].at("entries").size(), 1u) << totals[0] << " (--sport: the server's flow only)";
  EXPECT_EQ(totals[0]["entries"][0].at("key"), flow);
  EXPECT_EQ(totals[0]["entries"][0].at("value"), server_count);
  std::cout << "server: TcpRetransSegs " << server_count << ", per-interval sum " << summed << " over " << prints
            << " prints\n";
}

std::set<std::string> names_of(const json& fields) {
  std::set<std::string> names;
  for (const json& f : fields) names.insert(f.at("name").get<std::string>());
  return names;
}

// --check compiles and verifies each variant: events counted in the host,
// the in-kernel counting, and per-flow counting; the offsets come from the
// running kernel's BTF.
TEST(Retrans, CheckInBothAggregationModesAndCountMode) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const std::set<std::string> probes = {"tcp:tcp_retransmit_skb", "tcp:tcp_retransmit_synack",
                                        "sock:inet_sock_set_state"};
  for (const char* where : {"host", "kernel"}) {
    SCOPED_TRACE(where);
    ToolProcess check({"--program", "retrans", "--check", "--aggregate", where});
    ASSERT_EQ(check.wait_exit(scaled(120s)), 0) << check.stderr_text();
    const json report = json::parse(check.stdout_text());
    EXPECT_EQ(report.at("aggregation"), where);
    std::set<std::string> targets;
    for (const json& probe : report.at("probes")) {
      EXPECT_EQ(probe.at("kind"), "tracepoint");
      targets.insert(probe.at("target").get<std::string>());
    }
    EXPECT_EQ(targets, probes);
    ASSERT_EQ(report.at("metrics").size(), 1u);
    const json& metric = report["metrics"][0];
    EXPECT_EQ(metric.at("name"), "tcptrace_tcp_retransmits_total");
    EXPECT_EQ(metric.at("kind"), "counter");
    EXPECT_EQ(metric.at("labels"), json::parse(R"([{"name":"kind","field":"kind","opt_in":false},
        {"name":"family","field":"family","opt_in":false},{"name":"state","field":"state","opt_in":false},
        {"name":"dport","field":"dport","opt_in":true}])"));
    EXPECT_EQ(report.at("tables"), json::array());
    if (std::string(where) == "host") {
      ASSERT_EQ(report.at("outputs").size(), 1u);
      EXPECT_EQ(names_of(report["outputs"][0].at("fields")),
                (std::set<std::string>{"ts_us", "skaddr", "pid", "comm", "family", "saddr", "sport", "daddr", "dport",
                                       "state", "kind", "segs"}));
    } else {
      EXPECT_EQ(report.at("outputs"), json::array());
    }
    // This kernel has BTF: every offset is defined, at the place libbpf-free
    // BTF reading finds it (kernel_btf_test checks that reader against
    // libbpf's).
    auto btf = KernelBtf::load();
    ASSERT_TRUE(btf.ok()) << btf.error().message;
    const std::map<std::string, std::pair<std::string, std::string>> wanted = {
        {"TCPTRACE_OFFSET_SKB_CB", {"sk_buff", "cb"}},
        {"TCPTRACE_OFFSET_TCP_GSO_SEGS", {"tcp_skb_cb", "tcp_gso_segs"}},
        {"TCPTRACE_OFFSET_RETRANSMIT_ERR", {"trace_event_raw_tcp_retransmit_skb", "err"}}};
    ASSERT_EQ(report.at("offsets").size(), wanted.size()) << report.at("offsets");
    for (const json& offset : report.at("offsets")) {
      const auto& [type, member] = wanted.at(offset.at("name").get<std::string>());
      EXPECT_EQ(offset.at("member"), type + "." + member);
      auto expected = btf->member_offset(type, member);
      if (expected.ok()) {
        EXPECT_EQ(offset.at("offset"), *expected) << offset;
      } else {
        // Only the record's err is new (Linux 6.17); older kernels lack it.
        EXPECT_EQ(offset.at("name"), "TCPTRACE_OFFSET_RETRANSMIT_ERR") << offset;
        EXPECT_TRUE(offset.at("offset").is_null()) << offset;
      }
    }
  }
  ToolProcess count({"--program", "retrans", "--check", "-D", "COUNT_FLOWS=1"});
  ASSERT_EQ(count.wait_exit(scaled(120s)), 0) << count.stderr_text();
  const json report = json::parse(count.stdout_text());
  ASSERT_EQ(report.at("tables").size(), 1u) << report.at("tables");
  const json& flows = report["tables"][0];
  EXPECT_EQ(flows.at("table"), "flows");
  EXPECT_EQ(flows.at("shape"), "counts");
  EXPECT_EQ(flows.at("listed"), true);
  EXPECT_EQ(names_of(flows.at("key")), (std::set<std::string>{"family", "saddr", "sport", "daddr", "dport"}));
}

}  // namespace
}  // namespace tcptrace::testing
