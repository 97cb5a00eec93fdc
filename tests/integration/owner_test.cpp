// Who `states` names as a socket's owner when the server is another process:
// started before the tracer (owners seeded from the socket table) or after
// it (learnt from listen()), pre-fork and SO_REUSEPORT servers, connections
// older than the tracer closed from either side, and orphans no process
// holds. The server is tcp_server.py in child processes with names of their
// own; the clients are this test process, so a bystander (the task a softirq
// interrupted, on loopback often the other end's process) would show up as
// the wrong pid.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
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

#include "loopback.h"
#include "network_namespace.h"
#include "state_chains.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct Server {
  std::unique_ptr<ToolProcess> process;
  uint16_t port = 0;
  pid_t master = 0;
  std::vector<pid_t> workers;
};

// Starts tcp_server.py and waits for its "listening" line. `prefix` runs it
// through a command (ip netns exec NAME), `extra` adds its options.
Server start_server(int family, const std::string& mode, int workers = 2, std::vector<std::string> extra = {},
                    std::vector<std::string> prefix = {}) {
  Server server;
  const std::string script = std::string(TCPTRACE_SOURCE_DIR) + "/tests/integration/tcp_server.py";
  std::vector<std::string> args = {"--family", family == AF_INET6 ? "6" : "4", "--mode", mode, "--workers",
                                   std::to_string(workers)};
  args.insert(args.end(), extra.begin(), extra.end());
  prefix.push_back("python3");
  server.process = std::make_unique<ToolProcess>(prefix, args, script);
  if (!server.process->wait_for_lines(1, 20s)) {
    ADD_FAILURE() << "tcp_server.py did not start: " << server.process->stderr_text();
    return server;
  }
  const json line = json::parse(server.process->stdout_lines().at(0));
  server.port = line.at("port").get<uint16_t>();
  server.master = line.at("master").get<pid_t>();
  server.workers = line.at("workers").get<std::vector<pid_t>>();
  return server;
}

struct Connection {
  Socket socket;
  uint16_t local_port = 0;
  pid_t served_by = 0;  // the server process that accepted it
};

// Connects and reads the serving process's pid, so the server has
// accepted it when this returns.
Connection open_connection(int family, uint16_t port) {
  Connection c;
  c.socket = connect_loopback(family, port);
  if (c.socket.fd() < 0) {
    ADD_FAILURE() << "connect to " << port << " failed: " << strerror(errno);
    return c;
  }
  c.local_port = c.socket.local_port();
  timeval timeout{5, 0};
  setsockopt(c.socket.fd(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string line;
  char ch = 0;
  while (line.size() < 16 && recv(c.socket.fd(), &ch, 1, 0) == 1 && ch != '\n') line.push_back(ch);
  c.served_by = static_cast<pid_t>(std::atoi(line.c_str()));
  EXPECT_GT(c.served_by, 0) << "no pid line from the server";
  return c;
}

void read_to_end(const Connection& c) {
  char buffer[65536];
  while (recv(c.socket.fd(), buffer, sizeof buffer, 0) > 0) {
  }
}

// The server sends its FIN first (FIN_WAIT1 on its side, CLOSE_WAIT here).
void close_server_first(Connection& c) {
  ASSERT_EQ(send(c.socket.fd(), "c", 1, 0), 1);
  read_to_end(c);
  c.socket.close();
}

// This side sends its FIN first; the server closes when it reads it.
void close_client_first(Connection& c) {
  ASSERT_EQ(send(c.socket.fd(), "w", 1, 0), 1);
  c.socket.close();
}

// Even turns the server closes first, odd ones this side: both FIN
// sequences on both ends.
void close_in_turn(Connection& c, size_t turn) {
  if (turn % 2 == 0) {
    close_server_first(c);
  } else {
    close_client_first(c);
  }
}

std::unique_ptr<ToolProcess> start_states(std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--program", "states"};
  args.insert(args.end(), extra.begin(), extra.end());
  return start_ready(std::move(args));
}

bool is_listener_event(const json& e) {
  return (e.at("oldstate") == "CLOSE" && e.at("newstate") == "LISTEN") ||
         (e.at("oldstate") == "LISTEN" && e.at("newstate") == "CLOSE");
}

// The server's and the client's socket of each connection to `port`, by the
// client's port. An accepted socket's first event can lack its peer (Linux
// 6.1 copies it after setting SYN_RECV), so a chain takes its ports from
// whichever of its events has both.
struct Ends {
  std::vector<json> server;
  std::vector<json> client;
};

std::map<uint16_t, Ends> connections_to(const std::vector<json>& events, uint16_t port) {
  std::map<uint16_t, Ends> ends;
  for (const auto& chain : by_socket(events)) {
    if (is_listener_event(chain.front())) continue;
    uint16_t peer = 0;
    bool server_side = false;
    for (const json& e : chain) {
      const int sport = e.at("sport"), dport = e.at("dport");
      if (sport == port && dport != 0) {
        server_side = true;
        peer = static_cast<uint16_t>(dport);
      } else if (dport == port && sport != 0) {
        peer = static_cast<uint16_t>(sport);
      }
    }
    if (peer == 0) continue;
    (server_side ? ends[peer].server : ends[peer].client) = chain;
  }
  return ends;
}

std::vector<std::string> transitions(const std::vector<json>& chain) {
  std::vector<std::string> names;
  for (const json& e : chain) names.push_back(e.at("oldstate").get<std::string>() + ">" + e.at("newstate").get<std::string>());
  return names;
}

const std::vector<std::string> kAcceptedServerCloses = {"LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED",
                                                        "ESTABLISHED>FIN_WAIT1", "FIN_WAIT1>FIN_WAIT2",
                                                        "FIN_WAIT2>CLOSE"};
const std::vector<std::string> kAcceptedClientCloses = {"LISTEN>SYN_RECV", "SYN_RECV>ESTABLISHED",
                                                        "ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK",
                                                        "LAST_ACK>CLOSE"};

void expect_owner(const json& e, pid_t pid, const std::string& comm) {
  EXPECT_EQ(e.at("pid"), pid) << e;
  EXPECT_EQ(e.at("comm"), comm) << e;
}

void expect_no_owner(const json& e) {
  EXPECT_TRUE(e.at("pid").is_null()) << e;
  EXPECT_TRUE(e.at("comm").is_null()) << e;
}

class OwnersBothFamilies : public ::testing::TestWithParam<int> {};

// The issue's headline case: a server already listening when the tracer
// starts. Every transition of every accepted socket names the server, every
// transition of every client socket names this process, whichever side
// closes first; --pid SERVER keeps exactly the server's transitions.
TEST_P(OwnersBothFamilies, ServerStartedBeforeTheTool) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const int family = GetParam();
  Server server = start_server(family, "single");
  ASSERT_NE(server.port, 0);
  for (const bool pid_filter : {false, true}) {
    SCOPED_TRACE(pid_filter ? "--pid SERVER" : "no filter");
    auto tool = pid_filter ? start_states({"--pid", std::to_string(server.master)}) : start_states();
    ASSERT_TRUE(tool);
    EXPECT_NE(tool->stderr_text().find("seeded socket owners"), std::string::npos) << tool->stderr_text();
    std::set<uint16_t> client_ports;
    for (int i = 0; i < 4; ++i) {
      Connection c = open_connection(family, server.port);
      EXPECT_EQ(c.served_by, server.master);
      client_ports.insert(c.local_port);
      close_in_turn(c, static_cast<size_t>(i));
    }
    std::this_thread::sleep_for(300ms);
    ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
    const std::vector<json> events = tool->events();
    const auto ends = connections_to(events, server.port);
    ASSERT_EQ(ends.size(), 4u);
    size_t server_events = 0;
    for (const auto& [peer, end] : ends) {
      EXPECT_TRUE(client_ports.count(peer)) << peer;
      const bool server_closed = transitions(end.server).at(2) == "ESTABLISHED>FIN_WAIT1";
      EXPECT_EQ(transitions(end.server), server_closed ? kAcceptedServerCloses : kAcceptedClientCloses);
      for (const json& e : end.server) expect_owner(e, server.master, "srv-single");
      server_events += end.server.size();
      if (pid_filter) {
        EXPECT_TRUE(end.client.empty());
        continue;
      }
      EXPECT_EQ(end.client.size(), 5u);
      for (const json& e : end.client) expect_owner(e, getpid(), own_comm());
    }
    EXPECT_EQ(server_events, 20u);
    if (pid_filter) {
      EXPECT_EQ(events.size(), 20u) << "--pid keeps the server's transitions and nothing else";
    }
  }
  server.process->stop(SIGTERM);
}

// Connections open before the tracer, then closed from each side: the FIN
// states run in softirq context, on loopback inside the other end's system
// call, so the current task is the wrong process half of the time.
TEST_P(OwnersBothFamilies, ConnectionsOlderThanTheTool) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const int family = GetParam();
  Server server = start_server(family, "single");
  ASSERT_NE(server.port, 0);
  std::vector<Connection> connections;
  for (int i = 0; i < 4; ++i) connections.push_back(open_connection(family, server.port));
  auto tool = start_states();
  ASSERT_TRUE(tool);
  static const std::regex seeded(R"(seeded socket owners from the socket table: (\d+) listening sockets, (\d+) connections)");
  std::smatch counts;
  const std::string err = tool->stderr_text();
  ASSERT_TRUE(std::regex_search(err, counts, seeded)) << err;
  EXPECT_GE(std::stoi(counts[1]), 1);
  EXPECT_GE(std::stoi(counts[2]), 8) << "both ends of 4 connections";
  for (size_t i = 0; i < connections.size(); ++i) close_in_turn(connections[i], i);
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  const auto ends = connections_to(tool->events(), server.port);
  ASSERT_EQ(ends.size(), 4u);
  for (const auto& [peer, end] : ends) {
    ASSERT_EQ(end.server.size(), 3u) << peer;
    ASSERT_EQ(end.client.size(), 3u) << peer;
    const bool server_closed = end.server.front().at("newstate") == "FIN_WAIT1";
    const std::vector<std::string> expected = server_closed ? std::vector<std::string>(kAcceptedServerCloses.begin() + 2,
                                                                                       kAcceptedServerCloses.end())
                                                            : std::vector<std::string>(kAcceptedClientCloses.begin() + 2,
                                                                                       kAcceptedClientCloses.end());
    EXPECT_EQ(transitions(end.server), expected);
    for (const json& e : end.server) expect_owner(e, server.master, "srv-single");
    for (const json& e : end.client) expect_owner(e, getpid(), own_comm());
  }
  server.process->stop(SIGTERM);
}

INSTANTIATE_TEST_SUITE_P(Owners, OwnersBothFamilies, ::testing::Values(AF_INET, AF_INET6),
                         [](const auto& info) { return info.param == AF_INET6 ? "IPv6" : "IPv4"; });

// `ss -tanp` as the oracle: for every socket alive at one moment (older
// than the tracer or not), each of its transitions names the process ss
// shows holding that address and port pair.
std::map<std::pair<uint16_t, uint16_t>, std::set<pid_t>> ss_holders(uint16_t port) {
  std::map<std::pair<uint16_t, uint16_t>, std::set<pid_t>> holders;
  const std::string command = "ss -tanpH '( sport = :" + std::to_string(port) + " or dport = :" +
                              std::to_string(port) + " )'";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return holders;
  static const std::regex row(R"(^\S+\s+\d+\s+\d+\s+\S+:(\d+)\s+\S+:(\d+)\s*(.*)$)");
  static const std::regex pid_field(R"(pid=(\d+))");
  char buffer[4096];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) {
    std::string line(buffer);
    if (!line.empty() && line.back() == '\n') line.pop_back();
    std::smatch m;
    if (!std::regex_match(line, m, row)) continue;
    auto& pids = holders[{static_cast<uint16_t>(std::stoi(m[1])), static_cast<uint16_t>(std::stoi(m[2]))}];
    const std::string users = m[3];
    for (auto it = std::sregex_iterator(users.begin(), users.end(), pid_field); it != std::sregex_iterator(); ++it) {
      pids.insert(static_cast<pid_t>(std::stoi((*it)[1])));
    }
  }
  pclose(pipe);
  return holders;
}

TEST(Owners, AgreeWithTheProcessesSsShows) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Server server = start_server(AF_INET, "single");
  ASSERT_NE(server.port, 0);
  std::vector<Connection> connections;
  for (int i = 0; i < 3; ++i) connections.push_back(open_connection(AF_INET, server.port));
  auto tool = start_states();
  ASSERT_TRUE(tool);
  for (int i = 0; i < 3; ++i) connections.push_back(open_connection(AF_INET, server.port));
  const auto holders = ss_holders(server.port);
  for (size_t i = 0; i < connections.size(); ++i) close_in_turn(connections[i], i);
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();

  size_t sockets_checked = 0, events_checked = 0;
  for (const auto& [peer, end] : connections_to(tool->events(), server.port)) {
    const std::pair<const std::vector<json>*, std::pair<uint16_t, uint16_t>> sides[] = {
        {&end.server, {server.port, peer}}, {&end.client, {peer, server.port}}};
    for (const auto& [chain, tuple] : sides) {
      auto it = holders.find(tuple);
      if (it == holders.end()) continue;  // not alive at the snapshot
      ASSERT_EQ(it->second.size(), 1u) << tuple.first << " -> " << tuple.second;
      ++sockets_checked;
      for (const json& e : *chain) {
        EXPECT_EQ(e.at("pid"), *it->second.begin()) << e;
        ++events_checked;
      }
    }
  }
  EXPECT_EQ(sockets_checked, 12u) << "both ends of all 6 connections were alive at the snapshot";
  EXPECT_GE(events_checked, 12u * 3);
  server.process->stop(SIGTERM);
}

// A server socket closed with data still queued is an orphan in FIN_WAIT1:
// no process holds it (ss shows none), and its remaining transitions run in
// softirq context, here inside this process's recv(). The owner is unknown,
// and says so.
TEST(Owners, OrphanHasNoOwner) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Server server = start_server(AF_INET, "single");
  ASSERT_NE(server.port, 0);
  Connection c = open_connection(AF_INET, server.port);
  ASSERT_EQ(send(c.socket.fd(), "f", 1, 0), 1);
  std::set<pid_t> orphan_holders = {-1};
  for (int i = 0; i < 50 && !orphan_holders.empty(); ++i) {
    std::this_thread::sleep_for(20ms);
    auto holders = ss_holders(server.port);
    auto it = holders.find({server.port, c.local_port});
    if (it != holders.end()) orphan_holders = it->second;
  }
  ASSERT_TRUE(orphan_holders.empty()) << "the server's socket did not become an orphan";
  auto tool = start_states();
  ASSERT_TRUE(tool);
  read_to_end(c);
  c.socket.close();
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  const auto ends = connections_to(tool->events(), server.port);
  ASSERT_EQ(ends.count(c.local_port), 1u);
  const Ends& end = ends.at(c.local_port);
  EXPECT_EQ(transitions(end.server), (std::vector<std::string>{"FIN_WAIT1>FIN_WAIT2", "FIN_WAIT2>CLOSE"}));
  for (const json& e : end.server) expect_no_owner(e);
  EXPECT_EQ(transitions(end.client),
            (std::vector<std::string>{"ESTABLISHED>CLOSE_WAIT", "CLOSE_WAIT>LAST_ACK", "LAST_ACK>CLOSE"}));
  for (const json& e : end.client) expect_owner(e, getpid(), own_comm());
  server.process->stop(SIGTERM);
}

// Pre-fork: the master listens, workers inherit the socket and accept on
// it. Until a worker acts on a connection in a system call, the connection
// is named after the listener's owner, the master (the process that called
// listen(); seeded: the holder that opened it); from the worker's close()
// on, after that worker.
class OwnersServerStart : public ::testing::TestWithParam<bool> {
 protected:
  // The server (tcp_server.py MODE with `workers`) and states, started in
  // the order the parameter says: server first, so its owners are seeded,
  // or the tool first, so it sees the listen() calls.
  void start(const std::string& mode, int workers) {
    if (GetParam()) {
      server_ = start_server(AF_INET, mode, workers);
      tool_ = start_states();
    } else {
      tool_ = start_states();
      server_ = start_server(AF_INET, mode, workers);
    }
  }

  // Makes `n` connections the server closes first, then stops the tool.
  // Returns which server process served each, by the client's port.
  std::map<uint16_t, pid_t> exchange_and_stop(int n) {
    std::map<uint16_t, pid_t> served_by;
    for (int i = 0; i < n; ++i) {
      Connection c = open_connection(AF_INET, server_.port);
      EXPECT_TRUE(std::count(server_.workers.begin(), server_.workers.end(), c.served_by)) << c.served_by;
      served_by[c.local_port] = c.served_by;
      close_server_first(c);
    }
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(tool_->stop(SIGINT), 0) << tool_->stderr_text();
    return served_by;
  }

  Server server_;
  std::unique_ptr<ToolProcess> tool_;
};

TEST_P(OwnersServerStart, PreforkWorkersTakeOverWhenTheyClose) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  start("prefork", 3);
  ASSERT_TRUE(tool_);
  ASSERT_NE(server_.port, 0);
  ASSERT_EQ(server_.workers.size(), 3u);
  const Server& server = server_;
  const std::map<uint16_t, pid_t> served_by = exchange_and_stop(9);
  const std::vector<json> events = tool_->events();
  const auto ends = connections_to(events, server.port);
  ASSERT_EQ(ends.size(), 9u);
  for (const auto& [peer, end] : ends) {
    ASSERT_EQ(transitions(end.server), kAcceptedServerCloses) << peer;
    expect_owner(end.server[0], server.master, "srv-master");
    expect_owner(end.server[1], server.master, "srv-master");
    for (size_t i = 2; i < end.server.size(); ++i) expect_owner(end.server[i], served_by.at(peer), "srv-worker");
  }
  if (!GetParam()) {
    int listens = 0;
    for (const json& e : events) {
      if (e.at("sport") != server.port || e.at("newstate") != "LISTEN") continue;
      ++listens;
      expect_owner(e, server.master, "srv-master");
    }
    EXPECT_EQ(listens, 1);
  }
  server_.process->stop(SIGTERM);
}

// SO_REUSEPORT: each worker listens on its own socket of one port, and the
// kernel picks a socket per connection; the state change record does not say
// which, so until the worker closes it the connection's owner is unknown
// (null), never one worker guessed for all. From its close() on, the worker.
TEST_P(OwnersServerStart, ReuseportGroupIsUnknownUntilAWorkerActs) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  start("reuseport", 3);
  ASSERT_TRUE(tool_);
  ASSERT_NE(server_.port, 0);
  const Server& server = server_;
  const std::map<uint16_t, pid_t> served_by = exchange_and_stop(12);
  std::set<pid_t> workers_seen;
  for (const auto& [port, pid] : served_by) workers_seen.insert(pid);
  EXPECT_GE(workers_seen.size(), 2u) << "the kernel spread 12 connections over the group";
  const std::vector<json> events = tool_->events();
  const auto ends = connections_to(events, server.port);
  ASSERT_EQ(ends.size(), 12u);
  for (const auto& [peer, end] : ends) {
    ASSERT_EQ(transitions(end.server), kAcceptedServerCloses) << peer;
    expect_no_owner(end.server[0]);
    expect_no_owner(end.server[1]);
    for (size_t i = 2; i < end.server.size(); ++i) expect_owner(end.server[i], served_by.at(peer), "srv-worker");
  }
  if (!GetParam()) {
    std::set<pid_t> listeners;
    for (const json& e : events) {
      if (e.at("sport") != server.port || e.at("newstate") != "LISTEN") continue;
      EXPECT_EQ(e.at("comm"), "srv-worker") << e;
      listeners.insert(e.at("pid").get<pid_t>());
    }
    EXPECT_EQ(listeners, std::set<pid_t>(server.workers.begin(), server.workers.end()));
  }
  server_.process->stop(SIGTERM);
}

// Two servers, one per network namespace, on the same address and port (the
// normal case for pods on one node). The state change record has no
// namespace; the program reads it from the socket at offsets from the
// kernel's BTF, so each accepted connection is named after the server of its
// own namespace, seeded or learnt; with listeners keyed by port alone the two
// would collide.
TEST_P(OwnersServerStart, ListenersOnOnePortInTwoNetworkNamespaces) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const bool server_first = GetParam();
  const std::string suffix = std::to_string(getpid());
  NetworkNamespace a("tcptrace-owner-a-" + suffix), b("tcptrace-owner-b-" + suffix);
  ASSERT_TRUE(a.created() && b.created()) << "ip netns add failed";
  std::unique_ptr<ToolProcess> tool;
  if (!server_first) tool = start_states();
  Server server_a = start_server(AF_INET, "single", 0, {"--name", "srv-netns-a"}, {"ip", "netns", "exec", a.name()});
  ASSERT_NE(server_a.port, 0);
  Server server_b = start_server(AF_INET, "single", 0, {"--name", "srv-netns-b", "--port", std::to_string(server_a.port)},
                                 {"ip", "netns", "exec", b.name()});
  ASSERT_EQ(server_b.port, server_a.port);
  if (server_first) tool = start_states();
  ASSERT_TRUE(tool);
  for (int i = 0; i < 3; ++i) {
    for (const NetworkNamespace* ns : {&a, &b}) {
      Connection c;
      ns->run_inside([&] { c = open_connection(AF_INET, server_a.port); });
      EXPECT_EQ(c.served_by, ns == &a ? server_a.master : server_b.master);
      close_server_first(c);
    }
  }
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  std::map<pid_t, int> accepted_by;
  for (const auto& chain : by_socket(tool->events())) {
    const json& first = chain.front();
    if (first.at("sport") != server_a.port || first.at("oldstate") != "LISTEN" || first.at("newstate") != "SYN_RECV") {
      continue;
    }
    ASSERT_EQ(transitions(chain), kAcceptedServerCloses);
    const bool in_a = first.at("pid") == server_a.master;
    for (const json& e : chain) expect_owner(e, in_a ? server_a.master : server_b.master, in_a ? "srv-netns-a" : "srv-netns-b");
    ++accepted_by[first.at("pid").is_null() ? 0 : first.at("pid").get<pid_t>()];
  }
  EXPECT_EQ(accepted_by, (std::map<pid_t, int>{{server_a.master, 3}, {server_b.master, 3}}));
  server_a.process->stop(SIGTERM);
  server_b.process->stop(SIGTERM);
}

INSTANTIATE_TEST_SUITE_P(Owners, OwnersServerStart, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "ServerBeforeTool" : "ToolBeforeServer"; });

}  // namespace
}  // namespace tcptrace::testing
