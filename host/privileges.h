// Giving up root's power once the probes are attached. Reading buffers and
// maps needs only the fds the tool holds, so after "ready" (when nothing
// will be loaded again: not with --watch) every thread drops every
// capability and sets no_new_privs, so neither it nor anything it could be
// made to execute regains them.
//
// Which bpf() commands a process may issue on fds it holds without CAP_BPF
// depends on the kernel: where kernel.unprivileged_bpf_disabled (Debian: 2)
// guards every bpf() command, the scrapes' map lookups, object info
// (recursion_misses) and the drop counter's reads need CAP_BPF; upstream
// Linux 6.5 narrowed the check to creating maps and loading programs, and
// stable kernels may carry that (Debian's 6.1.0-56 answers the lookup
// without any capability). So the tool asks the kernel instead of its
// version: a child that dropped everything tries a lookup on a map its
// parent created. CAP_BPF alone is kept when that fails.
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
