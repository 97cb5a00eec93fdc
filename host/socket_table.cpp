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

// include/net/tcp_states.h
constexpr uint8_t kEstablished = 1, kSynSent = 2, kFinWait1 = 4, kFinWait2 = 5, kCloseWait = 8, kLastAck = 9,
                  kListen = 10, kClosing = 11;

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
    int remaining = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buffer); NLMSG_OK(h, remaining); h = NLMSG_NEXT(h, remaining)) {
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

// Dumps every namespace in `namespaces` from one helper thread: setns()
// moves only the calling thread (CLONE_NEWNET is per thread), and the
// thread ends when done, so the host's own threads never change namespace.
void dump_namespaces(const std::map<uint32_t, std::string>& namespaces, SocketTable& table) {
  std::thread worker([&] {
    for (const auto& [inode, path] : namespaces) {
      UniqueFd ns(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns.valid() || ::setns(ns.get(), CLONE_NEWNET) != 0) {
        table.skipped.push_back("network namespace " + std::to_string(inode) + " (" + path +
                                "): " + std::strerror(errno));
        continue;
      }
      auto diag = open_diag_socket();
      const Status dumped = !diag ? Status(std::move(diag).take_error())
                                  : [&]() -> Status {
        if (Status s = dump_family(diag->get(), inode, AF_INET, table.sockets); !s) return s;
        return dump_family(diag->get(), inode, AF_INET6, table.sockets);
      }();
      if (!dumped) {
        table.skipped.push_back("network namespace " + std::to_string(inode) + ": " + dumped.error().message);
        continue;
      }
      ++table.namespaces;
    }
  });
  worker.join();
}

}  // namespace

uint32_t dumped_state_mask() {
  uint32_t mask = 0;
  for (uint8_t state : {kEstablished, kSynSent, kFinWait1, kFinWait2, kCloseWait, kLastAck, kListen, kClosing}) {
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
  if (options.all_namespaces) {
    dump_namespaces(network_namespaces(options.proc), table);
  } else {
    const auto own = namespace_inode(options.proc + "/thread-self/ns/net");
    if (!own) return runtime_error("cannot read this thread's network namespace: " + std::string(std::strerror(errno)));
    auto diag = open_diag_socket();
    if (!diag) return std::move(diag).take_error();
    auto sockets = dump_tcp_sockets(diag->get(), *own);
    if (!sockets) return std::move(sockets).take_error();
    table.sockets = std::move(sockets).value();
    table.namespaces = 1;
  }
  if (table.namespaces == 0) {
    return runtime_error("could not dump any network namespace" +
                         (table.skipped.empty() ? std::string() : ": " + table.skipped.front()));
  }

  // Holders: only inodes the dump listed matter (inode 0 has no holder).
  std::unordered_set<uint64_t> wanted;
  for (const TcpSocket& socket : table.sockets) {
    if (socket.inode != 0) wanted.insert(socket.inode);
  }
  if (!wanted.empty()) {
    constexpr std::string_view kPrefix = "socket:[";
    for_each_number(options.proc, [&](const char* pid_text) {
      const pid_t pid = static_cast<pid_t>(std::strtol(pid_text, nullptr, 10));
      const std::string fd_dir = options.proc + "/" + pid_text + "/fd";
      UniqueFd dir(::open(fd_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!dir.valid()) return;  // gone, or a kernel thread's empty table
      std::vector<uint64_t> held;
      for_each_number(fd_dir, [&](const char* fd) {
        char link[64];
        const ssize_t n = ::readlinkat(dir.get(), fd, link, sizeof link - 1);
        if (n <= static_cast<ssize_t>(kPrefix.size()) || std::string_view(link, kPrefix.size()) != kPrefix) return;
        link[n] = '\0';
        const uint64_t inode = std::strtoull(link + kPrefix.size(), nullptr, 10);
        if (wanted.count(inode) != 0) held.push_back(inode);
      });
      // A process may hold one socket under several fds (dup): count it once.
      std::sort(held.begin(), held.end());
      held.erase(std::unique(held.begin(), held.end()), held.end());
      for (uint64_t inode : held) table.holders[inode].push_back(pid);
    });
  }
  for (auto& [inode, pids] : table.holders) std::sort(pids.begin(), pids.end());

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
