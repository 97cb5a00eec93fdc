// The socket table as sock_diag and /proc give it (this process's own
// sockets: no root needed), and the owner seeding planned from it.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>

#include "integration/loopback.h"
#include "owner_seed.h"
#include "socket_table.h"

namespace tcptrace {
namespace {

// ---------------------------------------------------------- the real table

using testing::bind_loopback;
using testing::connect_loopback;
using testing::Socket;
using testing::start_listening;

uint64_t inode_of(int fd) {
  char link[64] = {};
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  EXPECT_GT(readlink(path.c_str(), link, sizeof link - 1), 0);
  return std::strtoull(link + 8, nullptr, 10);  // "socket:[N]"
}

std::string own_comm() {
  std::ifstream in("/proc/self/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

const TcpSocket* find_socket(const SocketTable& table, uint64_t inode) {
  for (const TcpSocket& s : table.sockets) {
    if (s.inode == inode) return &s;
  }
  return nullptr;
}

TEST(SocketTable, OwnListenerAndConnectionWithThisProcessAsHolder) {
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  Socket client = connect_loopback(AF_INET, listener.local_port());
  ASSERT_GE(client.fd(), 0);
  // Not accepted yet: the server side has no file, so no inode.

  auto table = read_socket_table({"/proc", false});
  ASSERT_TRUE(table.ok()) << table.error().message;
  EXPECT_EQ(table->namespaces, 1u);

  const TcpSocket* listening = find_socket(*table, inode_of(listener.fd()));
  ASSERT_NE(listening, nullptr);
  EXPECT_EQ(listening->state, 10);  // LISTEN
  EXPECT_EQ(listening->family, 4);
  EXPECT_EQ(listening->sport, listener.local_port());
  EXPECT_EQ(listening->dport, 0);
  const uint8_t loopback[4] = {127, 0, 0, 1};
  EXPECT_EQ(std::memcmp(listening->saddr.data(), loopback, 4), 0);

  const TcpSocket* connected = find_socket(*table, inode_of(client.fd()));
  ASSERT_NE(connected, nullptr);
  EXPECT_EQ(connected->state, 1);  // ESTABLISHED
  EXPECT_EQ(connected->sport, client.local_port());
  EXPECT_EQ(connected->dport, listener.local_port());
  EXPECT_EQ(std::memcmp(connected->daddr.data(), loopback, 4), 0);

  // The server end, in the accept queue: the same ports swapped, inode 0.
  const auto queued = std::find_if(table->sockets.begin(), table->sockets.end(), [&](const TcpSocket& s) {
    return s.sport == listener.local_port() && s.dport == client.local_port();
  });
  ASSERT_NE(queued, table->sockets.end());
  EXPECT_EQ(queued->inode, 0u);
  EXPECT_EQ(queued->netns, listening->netns);

  for (const int fd : {listener.fd(), client.fd()}) {
    const auto holders = table->holders.find(inode_of(fd));
    ASSERT_NE(holders, table->holders.end());
    EXPECT_EQ(holders->second, std::vector<pid_t>{getpid()});
  }
  ASSERT_EQ(table->processes.count(getpid()), 1u);
  EXPECT_EQ(table->processes.at(getpid()).comm, own_comm());
  EXPECT_EQ(table->processes.at(getpid()).ppid, getppid());

  // Planned: the listener and both ends, all owned by this process.
  const OwnerSeed seed = plan_owner_seed(*table, true);
  const auto listener_entry = std::find_if(seed.listeners.begin(), seed.listeners.end(), [&](const auto& e) {
    return e.first.port == listener.local_port() && e.first.family == 4;
  });
  ASSERT_NE(listener_entry, seed.listeners.end());
  EXPECT_EQ(listener_entry->second.owner.pid, static_cast<__u32>(getpid()));
  EXPECT_EQ(std::string(listener_entry->second.owner.comm), own_comm());
  EXPECT_EQ(listener_entry->second.sockets, 1u);
  EXPECT_EQ(listener_entry->first.netns, listening->netns);
  int ends = 0;
  for (const auto& [key, owner] : seed.connections) {
    const bool client_end = key.sport == client.local_port() && key.dport == listener.local_port();
    const bool server_end = key.sport == listener.local_port() && key.dport == client.local_port();
    if (!client_end && !server_end) continue;
    ++ends;
    EXPECT_EQ(owner.pid, static_cast<__u32>(getpid()));
  }
  EXPECT_EQ(ends, 2);
}

TEST(SocketTable, Ipv6AddressesAreWhole) {
  Socket listener = bind_loopback(AF_INET6);
  start_listening(listener);
  auto table = read_socket_table({"/proc", false});
  ASSERT_TRUE(table.ok()) << table.error().message;
  const TcpSocket* listening = find_socket(*table, inode_of(listener.fd()));
  ASSERT_NE(listening, nullptr);
  EXPECT_EQ(listening->family, 6);
  EXPECT_EQ(std::memcmp(listening->saddr.data(), &in6addr_loopback, 16), 0);
}

// The fd links are read in batches of 8192 on several threads: a socket
// behind more fds than one batch holds is still found.
TEST(SocketTable, HolderFoundPastOneBatchOfLinks) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  const rlimit saved = limit;
  if (limit.rlim_max < 9000) GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << limit.rlim_max << " < 9000";
  limit.rlim_cur = 9000;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  std::vector<Socket> others;
  for (int i = 0; i < 8500; ++i) {
    others.emplace_back(socket(AF_INET, SOCK_DGRAM, 0));
    ASSERT_GE(others.back().fd(), 0) << i;
  }
  Socket listener = bind_loopback(AF_INET);  // a higher fd: read in the second batch
  start_listening(listener);
  auto table = read_socket_table({"/proc", false});
  ASSERT_TRUE(table.ok()) << table.error().message;
  const auto holders = table->holders.find(inode_of(listener.fd()));
  ASSERT_NE(holders, table->holders.end());
  EXPECT_EQ(holders->second, std::vector<pid_t>{getpid()});
  others.clear();
  setrlimit(RLIMIT_NOFILE, &saved);
}

TEST(SocketTable, DumpedStatesAreThoseAProcessCanHold) {
  // ESTABLISHED SYN_SENT FIN_WAIT1 FIN_WAIT2 CLOSE_WAIT LAST_ACK LISTEN CLOSING
  EXPECT_EQ(dumped_state_mask(), (1u << 1) | (1u << 2) | (1u << 4) | (1u << 5) | (1u << 8) | (1u << 9) |
                                     (1u << 10) | (1u << 11));
}

// -------------------------------------------------------- planned entries

TcpSocket socket_of(uint8_t state, uint16_t sport, uint16_t dport, uint64_t inode, const char* saddr = "127.0.0.1",
                    uint32_t netns = 4026531840u) {
  TcpSocket s;
  s.netns = netns;
  s.state = state;
  s.sport = sport;
  s.dport = dport;
  s.inode = inode;
  if (std::strchr(saddr, ':') != nullptr) {
    s.family = 6;
    EXPECT_EQ(inet_pton(AF_INET6, saddr, s.saddr.data()), 1);
  } else {
    s.family = 4;
    EXPECT_EQ(inet_pton(AF_INET, saddr, s.saddr.data()), 1);
  }
  return s;
}

SocketTable table_with(std::vector<TcpSocket> sockets, std::unordered_map<uint64_t, std::vector<pid_t>> holders,
                       std::unordered_map<pid_t, ProcessInfo> processes) {
  SocketTable table;
  table.sockets = std::move(sockets);
  table.holders = std::move(holders);
  table.processes = std::move(processes);
  table.namespaces = 1;
  return table;
}

TEST(OwnerSeed, OneHolderOwnsItsSockets) {
  const auto table = table_with({socket_of(10, 80, 0, 11, "0.0.0.0"), socket_of(1, 80, 5000, 12)},
                                {{11, {300}}, {12, {300}}}, {{300, {1, "nginx"}}});
  const OwnerSeed seed = plan_owner_seed(table, true);
  ASSERT_EQ(seed.listeners.size(), 1u);
  const auto& [key, listener] = seed.listeners[0];
  EXPECT_EQ(key.netns, 4026531840u);
  EXPECT_EQ(key.family, 4);
  EXPECT_EQ(key.port, 80);
  EXPECT_EQ(std::vector<uint8_t>(key.addr, key.addr + 16), std::vector<uint8_t>(16, 0));  // 0.0.0.0: wildcard
  EXPECT_EQ(listener.owner.pid, 300u);
  EXPECT_STREQ(listener.owner.comm, "nginx");
  EXPECT_EQ(listener.sockets, 1u);
  EXPECT_EQ(listener.owners_differ, 0u);
  ASSERT_EQ(seed.connections.size(), 1u);
  const auto& [ckey, owner] = seed.connections[0];
  EXPECT_EQ(ckey.sport, 80);
  EXPECT_EQ(ckey.dport, 5000);
  EXPECT_EQ(ckey.saddr[0], 127);
  EXPECT_EQ(owner.pid, 300u);
  EXPECT_EQ(seed.unowned, 0u);
}

TEST(OwnerSeed, PreforkListenerBelongsToTheProcessThatOpenedIt) {
  // Master 100 listened, then forked workers 101 and 102, which inherited it.
  const auto table = table_with({socket_of(10, 8080, 0, 21)}, {{21, {100, 101, 102}}},
                                {{100, {1, "master"}}, {101, {100, "worker"}}, {102, {100, "worker"}}, {1, {0, "init"}}});
  const OwnerSeed seed = plan_owner_seed(table, true);
  ASSERT_EQ(seed.listeners.size(), 1u);
  EXPECT_EQ(seed.listeners[0].second.owner.pid, 100u);
  EXPECT_STREQ(seed.listeners[0].second.owner.comm, "master");
  EXPECT_EQ(seed.listeners[0].second.owners_differ, 0u);
}

TEST(OwnerSeed, ChooseOwnerLooksThroughGenerations) {
  const std::unordered_map<pid_t, ProcessInfo> processes = {
      {10, {1, "a"}}, {20, {10, "b"}}, {30, {20, "c"}}, {40, {1, "d"}}};
  EXPECT_EQ(choose_owner({30}, processes), 30);
  EXPECT_EQ(choose_owner({10, 30}, processes), 10);   // a grandchild shares it
  EXPECT_EQ(choose_owner({20, 30}, processes), 20);
  EXPECT_EQ(choose_owner({30, 40}, processes), std::nullopt);  // unrelated: unknown
  EXPECT_EQ(choose_owner({}, processes), std::nullopt);
  EXPECT_EQ(choose_owner({50, 60}, processes), std::nullopt);  // gone: no ancestry to go by
}

TEST(OwnerSeed, ReuseportGroupOfSeveralProcessesHasNoOwner) {
  const auto table = table_with({socket_of(10, 9000, 0, 31), socket_of(10, 9000, 0, 32), socket_of(10, 9000, 0, 33)},
                                {{31, {201}}, {32, {202}}, {33, {203}}},
                                {{201, {200, "w"}}, {202, {200, "w"}}, {203, {200, "w"}}});
  const OwnerSeed seed = plan_owner_seed(table, true);
  ASSERT_EQ(seed.listeners.size(), 1u);
  EXPECT_EQ(seed.listeners[0].second.sockets, 3u);
  EXPECT_EQ(seed.listeners[0].second.owners_differ, 1u);
  EXPECT_EQ(seed.listeners[0].second.owner.pid, 0u);
  EXPECT_EQ(seed.listening_sockets, 3u);
}

TEST(OwnerSeed, ReuseportGroupOfOneProcessKeepsItsOwner) {
  const auto table = table_with({socket_of(10, 9000, 0, 31), socket_of(10, 9000, 0, 32)}, {{31, {201}}, {32, {201}}},
                                {{201, {1, "envoy"}}});
  const OwnerSeed seed = plan_owner_seed(table, true);
  ASSERT_EQ(seed.listeners.size(), 1u);
  EXPECT_EQ(seed.listeners[0].second.sockets, 2u);
  EXPECT_EQ(seed.listeners[0].second.owners_differ, 0u);
  EXPECT_EQ(seed.listeners[0].second.owner.pid, 201u);
}

TEST(OwnerSeed, ListenersOnOtherAddressesOrNamespacesAreSeparate) {
  const auto table = table_with(
      {socket_of(10, 53, 0, 41, "127.0.0.1"), socket_of(10, 53, 0, 42, "10.0.0.1"),
       socket_of(10, 53, 0, 43, "127.0.0.1", 4026532000u), socket_of(10, 53, 0, 44, "::")},
      {{41, {1}}, {42, {2}}, {43, {3}}, {44, {4}}}, {{1, {0, "a"}}, {2, {0, "b"}}, {3, {0, "c"}}, {4, {0, "d"}}});
  OwnerSeed seed = plan_owner_seed(table, true);
  ASSERT_EQ(seed.listeners.size(), 4u);
  for (const auto& [key, listener] : seed.listeners) {
    EXPECT_EQ(listener.owners_differ, 0u);
    EXPECT_EQ(listener.sockets, 1u);
  }
  // Without namespaces in the keys, the two 127.0.0.1:53 listeners collide:
  // different processes, so that key has no owner.
  seed = plan_owner_seed(table, false);
  ASSERT_EQ(seed.listeners.size(), 3u);
  int differ = 0;
  for (const auto& [key, listener] : seed.listeners) {
    EXPECT_EQ(key.netns, 0u);
    differ += listener.owners_differ;
  }
  EXPECT_EQ(differ, 1);
}

TEST(OwnerSeed, QueuedConnectionsBelongToTheListenerOrphansToNoOne) {
  const auto table = table_with(
      {socket_of(10, 80, 0, 51, "0.0.0.0"), socket_of(1, 80, 6000, 0, "127.0.0.1"),
       socket_of(8, 80, 6001, 0, "127.0.0.1"), socket_of(5, 80, 6002, 0, "127.0.0.1"),
       socket_of(1, 81, 6003, 0, "127.0.0.1")},
      {{51, {700}}}, {{700, {1, "httpd"}}});
  const OwnerSeed seed = plan_owner_seed(table, true);
  ASSERT_EQ(seed.connections.size(), 2u);  // ESTABLISHED and CLOSE_WAIT in the queue of :80
  for (const auto& [key, owner] : seed.connections) {
    EXPECT_EQ(key.sport, 80);
    EXPECT_EQ(owner.pid, 700u);
  }
  EXPECT_EQ(seed.unowned, 2u);  // the FIN_WAIT2 orphan, and the one on :81 where nothing listens
}

TEST(OwnerSeed, Ipv6KeysCarryAllSixteenBytes) {
  const auto table = table_with({socket_of(1, 443, 7000, 61, "2001:db8::5")}, {{61, {9}}}, {{9, {1, "h"}}});
  const OwnerSeed seed = plan_owner_seed(table, true);
  ASSERT_EQ(seed.connections.size(), 1u);
  const auto& key = seed.connections[0].first;
  EXPECT_EQ(key.family, 6);
  unsigned char expected[16];
  inet_pton(AF_INET6, "2001:db8::5", expected);
  EXPECT_EQ(std::memcmp(key.saddr, expected, 16), 0);
  EXPECT_EQ(key.zero, 0);
}

}  // namespace
}  // namespace tcptrace
