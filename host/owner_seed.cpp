#include "owner_seed.h"

#include <algorithm>
#include <cstring>
#include <map>

namespace tcptrace {
namespace {

tcptrace_owner owner_of(pid_t pid, const std::unordered_map<pid_t, ProcessInfo>& processes) {
  tcptrace_owner owner{};
  owner.pid = static_cast<__u32>(pid);
  if (auto it = processes.find(pid); it != processes.end()) {
    std::strncpy(owner.comm, it->second.comm.c_str(), sizeof owner.comm - 1);
  }
  return owner;
}

tcptrace_listener_key listener_key(const TcpSocket& socket, uint32_t netns, bool wildcard) {
  tcptrace_listener_key key{};
  key.netns = netns;
  key.family = socket.family;
  key.port = socket.sport;
  if (!wildcard) std::memcpy(key.addr, socket.saddr.data(), sizeof key.addr);
  return key;
}

// Keys are whole bytes with no padding, zeroed before they are filled.
struct KeyBytesLess {
  bool operator()(const tcptrace_listener_key& a, const tcptrace_listener_key& b) const {
    return std::memcmp(&a, &b, sizeof a) < 0;
  }
};

}  // namespace

Result<std::vector<std::string>> netns_offset_cflags(const KernelBtf& btf) {
  // sk->__sk_common.skc_net is a possible_net_t, whose one member is the
  // struct net pointer (without CONFIG_NET_NS it has none, and BTF says so).
  auto sock_net = btf.member_offset("sock", "__sk_common.skc_net.net");
  if (!sock_net) return std::move(sock_net).take_error();
  auto net_inum = btf.member_offset("net", "ns.inum");
  if (!net_inum) return std::move(net_inum).take_error();
  return std::vector<std::string>{"-DTCPTRACE_SOCK_NET_OFFSET=" + std::to_string(*sock_net),
                                  "-DTCPTRACE_NET_INUM_OFFSET=" + std::to_string(*net_inum)};
}

std::optional<pid_t> choose_owner(const std::vector<pid_t>& holders,
                                  const std::unordered_map<pid_t, ProcessInfo>& processes) {
  if (holders.empty()) return std::nullopt;
  if (holders.size() == 1) return holders.front();
  std::optional<pid_t> root;
  for (pid_t holder : holders) {
    bool ancestor_holds = false;
    pid_t pid = holder;
    for (int depth = 0; depth < 64; ++depth) {
      auto it = processes.find(pid);
      if (it == processes.end() || it->second.ppid <= 0 || it->second.ppid == pid) break;
      pid = it->second.ppid;
      if (std::binary_search(holders.begin(), holders.end(), pid)) {
        ancestor_holds = true;
        break;
      }
    }
    if (ancestor_holds) continue;
    if (root) return std::nullopt;  // two unrelated roots
    root = holder;
  }
  return root;
}

OwnerSeed plan_owner_seed(const SocketTable& table, bool keyed_by_netns) {
  OwnerSeed seed;
  auto owner_pid = [&](const TcpSocket& socket) -> std::optional<pid_t> {
    if (socket.inode == 0) return std::nullopt;
    auto it = table.holders.find(socket.inode);
    if (it == table.holders.end()) return std::nullopt;
    return choose_owner(it->second, table.processes);
  };

  // Listeners, grouped by key: a SO_REUSEPORT group is one entry.
  struct Group {
    std::optional<pid_t> owner;
    uint32_t sockets = 0;
    bool owners_differ = false;  // or a socket's owner is unknown
  };
  std::map<tcptrace_listener_key, Group, KeyBytesLess> groups;
  for (const TcpSocket& socket : table.sockets) {
    if (socket.state != kTcpListen) continue;
    Group& group = groups[listener_key(socket, keyed_by_netns ? socket.netns : 0, false)];
    const std::optional<pid_t> owner = owner_pid(socket);
    if (group.sockets++ == 0) group.owner = owner;
    group.owners_differ |= !owner || owner != group.owner;
  }
  for (const auto& [key, group] : groups) {
    tcptrace_listener value{};
    if (group.owner && !group.owners_differ) value.owner = owner_of(*group.owner, table.processes);
    value.sockets = group.sockets;
    value.owners_differ = group.owners_differ ? 1 : 0;
    seed.listeners.emplace_back(key, value);
    seed.listening_sockets += group.sockets;
  }

  // The listener a connection arrived through: bound to its local address,
  // else to the wildcard address (as the kernel's own lookup falls back).
  auto listener_for = [&](const TcpSocket& socket, uint32_t netns) -> const Group* {
    for (bool wildcard : {false, true}) {
      auto it = groups.find(listener_key(socket, netns, wildcard));
      if (it != groups.end()) return &it->second;
    }
    return nullptr;
  };

  for (const TcpSocket& socket : table.sockets) {
    if (socket.state == kTcpListen) continue;
    const uint32_t netns = keyed_by_netns ? socket.netns : 0;
    std::optional<tcptrace_owner> owner;
    if (const std::optional<pid_t> pid = owner_pid(socket)) {
      owner = owner_of(*pid, table.processes);
    } else if (socket.inode == 0) {
      // No file: either still in a listener's accept queue, owned by the
      // listener's owner, or orphaned after close(), owned by no one. An
      // orphan's state is one close() leads to (FIN_WAIT1/2, LAST_ACK,
      // CLOSING); a queued one is ESTABLISHED or CLOSE_WAIT.
      const bool queued = socket.state == kTcpEstablished || socket.state == kTcpCloseWait;
      const Group* listener = queued ? listener_for(socket, netns) : nullptr;
      if (listener && listener->owner && !listener->owners_differ) {
        owner = owner_of(*listener->owner, table.processes);
      }
    }
    if (!owner) {
      ++seed.unowned;
      continue;
    }
    tcptrace_connection_key key{};
    key.netns = netns;
    key.family = socket.family;
    key.sport = socket.sport;
    key.dport = socket.dport;
    std::memcpy(key.saddr, socket.saddr.data(), sizeof key.saddr);
    std::memcpy(key.daddr, socket.daddr.data(), sizeof key.daddr);
    seed.connections.emplace_back(key, *owner);
  }
  return seed;
}

}  // namespace tcptrace
