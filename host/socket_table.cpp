#include "socket_table.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>
#include <unordered_set>

#include "unique_fd.h"

namespace tcptrace {
namespace {

// Calls on_entry(name) for each numeric entry of `dir` (pids, fds).
void for_each_number(const std::string& dir, const std::function<void(const char*)>& on_entry) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (const dirent* entry = ::readdir(d)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    on_entry(entry->d_name);
  }
  ::closedir(d);
}

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// ppid from /proc/PID/stat: the 4th field, after "pid (comm) state"; comm
// may hold spaces and parentheses, so parse from the last ')'.
std::optional<pid_t> read_ppid(const std::string& proc, pid_t pid) {
  const std::string stat = read_first_line(proc + "/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 4 >= stat.size()) return std::nullopt;
  const char* p = stat.c_str() + close + 2;  // the state letter
  if (*p == '\0' || p[1] != ' ') return std::nullopt;
  return static_cast<pid_t>(std::strtol(p + 2, nullptr, 10));
}

std::optional<uint32_t> namespace_inode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return static_cast<uint32_t>(st.st_ino);
}

Result<UniqueFd> open_diag_socket() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd.valid()) return runtime_error(std::string("cannot open a sock_diag socket: ") + std::strerror(errno));
  return fd;
}

Status dump_family(int diag_fd, uint32_t netns, int family, std::vector<TcpSocket>& out) {
  struct {
    nlmsghdr header;
    inet_diag_req_v2 request;
  } message{};
  message.header.nlmsg_len = sizeof message;
  message.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  message.header.nlmsg_seq = static_cast<uint32_t>(family);
  message.request.sdiag_family = static_cast<uint8_t>(family);
  message.request.sdiag_protocol = IPPROTO_TCP;
  message.request.idiag_states = dumped_state_mask();
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(diag_fd, &message, sizeof message, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    return runtime_error(std::string("sock_diag request failed: ") + std::strerror(errno));
  }
  // Each reply datagram holds as many messages as fit; 32 KiB per read is
  // what the kernel fills per dump round anyway.
  alignas(nlmsghdr) static thread_local char buffer[32768];
  while (true) {
    const ssize_t n = ::recv(diag_fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return runtime_error(std::string("sock_diag dump failed: ") + std::strerror(errno));
    if (n == 0) return runtime_error("sock_diag dump ended early");
    const size_t received = static_cast<size_t>(n);
    for (size_t offset = 0; offset + sizeof(nlmsghdr) <= received;) {
      const auto* h = reinterpret_cast<const nlmsghdr*>(buffer + offset);
      if (h->nlmsg_len < sizeof(nlmsghdr) || h->nlmsg_len > received - offset) break;
      offset += NLMSG_ALIGN(h->nlmsg_len);
      if (h->nlmsg_type == NLMSG_DONE) return {};
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* error = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return runtime_error("sock_diag: truncated error");
        return runtime_error(std::string("sock_diag dump refused: ") + std::strerror(-error->error));
      }
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) continue;
      const auto* diag = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      TcpSocket socket;
      socket.netns = netns;
      socket.family = diag->idiag_family == AF_INET6 ? 6 : 4;
      socket.state = diag->idiag_state;
      socket.sport = ntohs(diag->id.idiag_sport);
      socket.dport = ntohs(diag->id.idiag_dport);
      const size_t address_bytes = socket.family == 6 ? 16 : 4;
      std::memcpy(socket.saddr.data(), diag->id.idiag_src, address_bytes);
      std::memcpy(socket.daddr.data(), diag->id.idiag_dst, address_bytes);
      socket.inode = diag->idiag_inode;
      out.push_back(socket);
    }
  }
}

// Dumps every namespace in `namespaces`, entering each with setns(), which
// moves only the calling thread (CLONE_NEWNET is per thread): call it on a
// thread of its own that ends when done, so the host's threads never
// change namespace. The thread's own namespace needs no setns(), which
// takes CAP_SYS_ADMIN even to enter the namespace one is in
// (net/core/net_namespace.c netns_install): a process granted only what
// tracing needs still dumps its own.
void dump_namespaces(const std::string& proc, const std::map<uint32_t, std::string>& namespaces,
                     SocketTable& table) {
  std::optional<uint32_t> current = namespace_inode(proc + "/thread-self/ns/net");
  for (const auto& [inode, path] : namespaces) {
    UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    bool entered = ns.valid() && current == inode;
    if (ns.valid() && !entered && ::setns(ns.get(), CLONE_NEWNET) == 0) {
      entered = true;
      current = inode;
    }
    if (!entered) {
      table.skipped.push_back("network namespace " + std::to_string(inode) + " (" + path + "): " +
                              std::strerror(errno));
      continue;
    }
    auto diag = open_diag_socket();
    auto sockets = diag ? dump_tcp_sockets(diag->get(), inode)
                        : Result<std::vector<TcpSocket>>(std::move(diag).take_error());
    if (!sockets) {
      table.skipped.push_back("network namespace " + std::to_string(inode) + ": " + sockets.error().message);
      continue;
    }
    table.sockets.insert(table.sockets.end(), sockets->begin(), sockets->end());
    ++table.namespaces;
  }
}

// The thread's own namespace only.
Status dump_own_namespace(const std::string& proc, SocketTable& table) {
  const auto own = namespace_inode(proc + "/thread-self/ns/net");
  if (!own) return runtime_error("cannot read this thread's network namespace: " + std::string(std::strerror(errno)));
  auto diag = open_diag_socket();
  if (!diag) return std::move(diag).take_error();
  auto sockets = dump_tcp_sockets(diag->get(), *own);
  if (!sockets) return std::move(sockets).take_error();
  table.sockets = std::move(sockets).value();
  table.namespaces = 1;
  return {};
}

// (socket inode, pid) for every socket:[INODE] link in every /proc/PID/fd.
// A readlink there costs several microseconds (each lookup instantiates a
// proc inode: 5 us here, 50 ms for one process holding 10 000 sockets), so
// the links are read by `threads` threads, a batch of processes at a time;
// the batch bounds how many fd directories are open at once.
std::vector<std::pair<uint64_t, pid_t>> read_socket_links(const std::string& proc, size_t threads) {
  struct Link {
    DIR* dir;
    pid_t pid;
    char fd[12];
  };
  std::vector<std::pair<uint64_t, pid_t>> links;
  std::vector<DIR*> dirs;
  std::vector<Link> batch;
  auto read_batch = [&] {
    std::vector<std::vector<std::pair<uint64_t, pid_t>>> found(threads);
    auto work = [&](size_t part) {
      constexpr std::string_view kPrefix = "socket:[";
      for (size_t i = part; i < batch.size(); i += threads) {
        char link[64];
        const ssize_t n = ::readlinkat(::dirfd(batch[i].dir), batch[i].fd, link, sizeof link - 1);
        if (n <= static_cast<ssize_t>(kPrefix.size()) || std::string_view(link, kPrefix.size()) != kPrefix) continue;
        link[n] = '\0';
        found[part].emplace_back(std::strtoull(link + kPrefix.size(), nullptr, 10), batch[i].pid);
      }
    };
    std::vector<std::thread> helpers;
    for (size_t part = 1; part < threads && part < batch.size(); ++part) helpers.emplace_back(work, part);
    work(0);
    for (auto& helper : helpers) helper.join();
    for (const auto& part : found) links.insert(links.end(), part.begin(), part.end());
    for (DIR* dir : dirs) ::closedir(dir);
    dirs.clear();
    batch.clear();
  };
  for_each_number(proc, [&](const char* pid_text) {
    DIR* dir = ::opendir((proc + "/" + pid_text + "/fd").c_str());
    if (dir == nullptr) return;  // gone, or not ours to read
    dirs.push_back(dir);
    const pid_t pid = static_cast<pid_t>(std::strtol(pid_text, nullptr, 10));
    while (const dirent* entry = ::readdir(dir)) {
      if (entry->d_name[0] < '0' || entry->d_name[0] > '9' || std::strlen(entry->d_name) >= sizeof(Link::fd)) continue;
      Link link{dir, pid, {}};
      std::strcpy(link.fd, entry->d_name);
      batch.push_back(link);
    }
    if (batch.size() >= 8192 || dirs.size() >= 128) read_batch();
  });
  read_batch();
  return links;
}

}  // namespace

uint32_t dumped_state_mask() {
  uint32_t mask = 0;
  for (uint8_t state : {kTcpEstablished, kTcpSynSent, kTcpFinWait1, kTcpFinWait2, kTcpCloseWait, kTcpLastAck,
                        kTcpListen, kTcpClosing}) {
    mask |= 1u << state;
  }
  return mask;
}

Result<std::vector<TcpSocket>> dump_tcp_sockets(int diag_fd, uint32_t netns) {
  std::vector<TcpSocket> sockets;
  if (Status s = dump_family(diag_fd, netns, AF_INET, sockets); !s) return std::move(s).take_error();
  if (Status s = dump_family(diag_fd, netns, AF_INET6, sockets); !s) return std::move(s).take_error();
  return sockets;
}

std::map<uint32_t, std::string> network_namespaces(const std::string& proc) {
  std::map<uint32_t, std::string> namespaces;
  for_each_number(proc, [&](const char* pid) {
    const std::string path = proc + "/" + pid + "/ns/net";
    if (auto inode = namespace_inode(path)) namespaces.emplace(*inode, path);
  });
  return namespaces;
}

Result<SocketTable> read_socket_table(const SocketTableOptions& options) {
  SocketTable table;
  // The dump and the fd links are independent reads: one thread dumps while
  // the others read links (of every socket, as the dump has not said yet
  // which are TCP).
  Status dumped;
  std::thread dumper([&] {
    if (options.all_namespaces) {
      dump_namespaces(options.proc, network_namespaces(options.proc), table);
    } else {
      dumped = dump_own_namespace(options.proc, table);
    }
  });
  const unsigned cpus = std::thread::hardware_concurrency();
  const std::vector<std::pair<uint64_t, pid_t>> links =
      read_socket_links(options.proc, std::clamp<size_t>(cpus, 1, 4));
  dumper.join();
  if (!dumped) return std::move(dumped).take_error();
  if (table.namespaces == 0) {
    return runtime_error("could not dump any network namespace" +
                         (table.skipped.empty() ? std::string() : ": " + table.skipped.front()));
  }

  // Holders: only inodes the dump listed matter (inode 0 has no holder).
  std::unordered_set<uint64_t> wanted;
  for (const TcpSocket& socket : table.sockets) {
    if (socket.inode != 0) wanted.insert(socket.inode);
  }
  for (const auto& [inode, pid] : links) {
    if (wanted.count(inode) != 0) table.holders[inode].push_back(pid);
  }
  // Ascending, and a process that holds one socket under several fds (dup)
  // counted once.
  for (auto& [inode, pids] : table.holders) {
    std::sort(pids.begin(), pids.end());
    pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
  }

  // comm and ppid of every holder and its ancestors (what the owner choice
  // in owner_seed.h needs).
  for (const auto& [inode, pids] : table.holders) {
    for (pid_t pid : pids) {
      for (int depth = 0; depth < 64 && pid > 0 && table.processes.count(pid) == 0; ++depth) {
        const auto ppid = read_ppid(options.proc, pid);
        if (!ppid) break;
        std::string comm = read_first_line(options.proc + "/" + std::to_string(pid) + "/comm");
        table.processes.emplace(pid, ProcessInfo{*ppid, std::move(comm)});
        pid = *ppid;
      }
    }
  }
  return table;
}

}  // namespace tcptrace
