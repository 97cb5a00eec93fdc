// Giving up root's power once the probes are attached. Reading buffers and
// maps needs only the fds the tool holds, so after "ready" (when nothing
// will be loaded again: not with --watch) every thread drops every
// capability and sets no_new_privs, so neither it nor anything it could be
// made to execute regains them.
//
// Which bpf() commands a process may issue on fds it holds without CAP_BPF
// depends on the kernel: since Linux 6.5 the unprivileged_bpf_disabled
// check applies only to creating maps and loading programs; before, with
// kernel.unprivileged_bpf_disabled set (Debian: 2), every bpf() command
// needs CAP_BPF (or CAP_SYS_ADMIN), and the scrapes' map lookups, object
// info (recursion_misses) and the drop counter's reads would fail. The tool
// asks the kernel instead of its version: a child that dropped everything
// tries a lookup on a map its parent created. CAP_BPF alone is kept when
// that fails.
//
// Capabilities belong to threads: the metrics server's threads drop theirs
// when they start (civetweb's init_thread callback, before any request),
// the main thread once the probes are attached.
#pragma once

#include <cstdint>
#include <string>

#include "result.h"

namespace tcptrace {

struct PrivilegePlan {
  bool keep_bpf = false;  // the kernel refuses bpf() on held fds without CAP_BPF
  std::string reason;     // why, for the line on stderr
};

// Asks the kernel (see above). Call while still privileged, before the
// process has threads: it forks.
PrivilegePlan plan_privilege_drop();

// Drops the calling thread's capabilities to `plan` (none, or CAP_BPF),
// clears its ambient and inheritable sets, empties the bounding set and sets
// no_new_privs.
Status drop_privileges(const PrivilegePlan& plan);

// The effective capability mask of the calling thread.
uint64_t effective_capabilities();

}  // namespace tcptrace
