// The kernel's table of TCP sockets and the processes that hold them, read
// the way `ss -tanp` reads it: a sock_diag dump (NETLINK_SOCK_DIAG,
// SOCK_DIAG_BY_FAMILY) lists each socket with its addresses, state and
// inode, and the `socket:[INODE]` links in /proc/PID/fd say which processes
// hold that inode. A dump sees only the network namespace of the netlink
// socket that asks, so each namespace is dumped through a socket created
// inside it (setns on a helper thread; a namespace is found through the
// /proc/PID/ns/net of a process in it).
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "result.h"

namespace tcptrace {

// include/net/tcp_states.h
enum TcpState : uint8_t {
  kTcpEstablished = 1, kTcpSynSent = 2, kTcpFinWait1 = 4, kTcpFinWait2 = 5, kTcpCloseWait = 8,
  kTcpLastAck = 9, kTcpListen = 10, kTcpClosing = 11,
};

struct TcpSocket {
  uint32_t netns = 0;   // inode of its network namespace
  uint8_t family = 0;   // 4 or 6
  uint8_t state = 0;    // TCP_* (include/net/tcp_states.h)
  uint16_t sport = 0;   // local port, host byte order
  uint16_t dport = 0;
  std::array<uint8_t, 16> saddr{};  // IPv4: the first 4 bytes
  std::array<uint8_t, 16> daddr{};
  uint64_t inode = 0;   // 0: no file: orphaned after close(), or not accepted yet
};

struct ProcessInfo {
  pid_t ppid = 0;
  std::string comm;  // the main thread's name (/proc/PID/comm)
};

struct SocketTable {
  std::vector<TcpSocket> sockets;
  // Socket inode -> the processes (tgids) whose fd tables hold it, ascending.
  std::unordered_map<uint64_t, std::vector<pid_t>> holders;
  // Every holder, and each holder's ancestors up to the first one that is
  // gone or pid 1.
  std::unordered_map<pid_t, ProcessInfo> processes;
  size_t namespaces = 0;  // network namespaces dumped
  // One line per namespace or process that could not be read (it went
  // away, or permissions), for the caller to report or ignore.
  std::vector<std::string> skipped;
};

// The TCP states a dump asks for: those a socket a process may hold can be
// in. Left out: TIME_WAIT and NEW_SYN_RECV/SYN_RECV request sockets (never
// held by a process), CLOSE and BOUND_INACTIVE (not connected, so no state
// change record can name them before they connect or listen again).
uint32_t dumped_state_mask();

// Dumps the TCP sockets of both families of the network namespace the
// netlink socket `diag_fd` was created in, tagging them with `netns`.
Result<std::vector<TcpSocket>> dump_tcp_sockets(int diag_fd, uint32_t netns);

struct SocketTableOptions {
  std::string proc = "/proc";
  // Every network namespace some process is in; otherwise only the calling
  // thread's own.
  bool all_namespaces = true;
};

// Reads the sockets, then their holders. Sockets and fds change while this
// runs; a process or namespace that disappears midway is skipped.
Result<SocketTable> read_socket_table(const SocketTableOptions& options);

// The network namespace (its inode) of every process, with one process in
// each to reach it through: netns inode -> "/proc/PID/ns/net".
std::map<uint32_t, std::string> network_namespaces(const std::string& proc);

}  // namespace tcptrace
