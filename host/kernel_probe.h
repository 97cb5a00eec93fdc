// Probes of what the running kernel can attach, by trying it. Kept apart from
// bcc_backend.cpp because it uses libbpf's API directly, whose declarations
// clash with libbcc's own libbpf.h.
#pragma once

#include "attach_method.h"
#include "kallsyms_view.h"

namespace tcptrace {

// Must run after tracefs is mounted (system_checks.h: ensure_tracefs).
KernelCapabilities probe_kernel_capabilities();

// Which bpf_probe_read_* helpers the verifier offers tracing programs.
ProbeReadHelpers probe_read_helpers();

// Only the ring buffer test (cheap: no program is loaded).
MethodSupport probe_ring_buffer_support();

}  // namespace tcptrace
