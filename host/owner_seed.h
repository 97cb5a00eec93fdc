// Which process owns each socket that existed before the tracer, as entries
// for the maps a program declares with "tcptrace:seed" (tcptrace_owner.h).
//
// The owner of a socket several processes hold (a listener opened before
// fork() and shared by pre-fork workers, a socket passed on by systemd's
// socket activation) is the holder none of whose ancestors holds it: the
// process that opened it, the one that called listen() on a listener, as
// the program itself learns it for a socket it sees created. Holders with
// no such common root (a descriptor passed between unrelated processes)
// leave the owner unknown rather than picking one.
#pragma once

#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernel_btf.h"
#include "socket_table.h"
#include "tcptrace_owner.h"

namespace tcptrace {

struct OwnerSeed {
  std::vector<std::pair<tcptrace_listener_key, tcptrace_listener>> listeners;
  std::vector<std::pair<tcptrace_connection_key, tcptrace_owner>> connections;
  size_t listening_sockets = 0;  // sockets behind `listeners`
  size_t unowned = 0;            // connections whose owner stays unknown
};

// `keyed_by_netns`: false when the program cannot read a socket's namespace
// (no BTF); keys then carry netns 0, and the table should hold one
// namespace only.
OwnerSeed plan_owner_seed(const SocketTable& table, bool keyed_by_netns);

// -DTCPTRACE_SOCK_NET_OFFSET=N -DTCPTRACE_NET_INUM_OFFSET=M for
// tcptrace_socket_netns(), from the kernel's BTF; an error says why not.
Result<std::vector<std::string>> netns_offset_cflags(const KernelBtf& btf);

// The owner among `holders` (ascending pids), or nullopt (see above).
std::optional<pid_t> choose_owner(const std::vector<pid_t>& holders,
                                  const std::unordered_map<pid_t, ProcessInfo>& processes);

}  // namespace tcptrace
