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

}  // namespace tcptrace
