// Probes of what the running kernel can attach, by trying it. Kept apart from
// bcc_backend.cpp because it uses libbpf's API directly, whose declarations
// clash with libbcc's own libbpf.h.
#pragma once

#include "attach_method.h"

namespace tcptrace {

// Must run after tracefs is mounted (system_checks.h: ensure_tracefs).
KernelCapabilities probe_kernel_capabilities();

// Only the ring buffer test (cheap: no program is loaded).
MethodSupport probe_ring_buffer_support();

}  // namespace tcptrace
