// What the machine must offer before a program is compiled: privileges and
// a mounted tracefs. Each check returns an error that says what is missing.
#pragma once

#include <string>

#include "result.h"

namespace tcptrace {

// Loading BPF programs needs CAP_BPF, tracing programs CAP_PERFMON (Linux
// 5.8+), both of which CAP_SYS_ADMIN implies; root has all three.
Status check_privileges();

// BCC reads tracepoint formats and attaches through tracefs, which it looks
// for at /sys/kernel/debug/tracing, then /sys/kernel/tracing. When neither
// is mounted and we may, mount tracefs at /sys/kernel/tracing (as the kernel
// documentation suggests); `note` receives what was done, for stderr.
Status ensure_tracefs(std::string& note);

// Why perf_event_open() (attaching a tracepoint or kprobe, opening a perf
// buffer) failed with `error`, beyond the errno, or "" when nothing more is
// known. Debian and Ubuntu kernels add kernel.perf_event_paranoid levels
// above 2 (their default) at which perf_event_open() answers EACCES to any
// caller without CAP_SYS_ADMIN, CAP_PERFMON or not; mainline kernels treat
// those levels as 2.
std::string perf_event_refusal_reason(int error, int paranoid, bool has_sys_admin);

// The same for this process: reads kernel.perf_event_paranoid and its own
// effective capabilities.
std::string perf_event_refusal_reason(int error);

}  // namespace tcptrace
