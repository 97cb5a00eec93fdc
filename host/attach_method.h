// Choosing how to attach a program that has variants (kfunc, kprobe,
// tracepoint), from what the running kernel can do. The decision is made by
// probing the kernel (bcc_backend.h: probe_kernel_capabilities), never from
// its version number: distributions backport and configure features freely.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace tcptrace {

enum class AttachMethod { kfunc, kprobe, tracepoint };

std::string_view method_name(AttachMethod method);
std::optional<AttachMethod> method_from_name(std::string_view name);

// The macro the host defines for a chosen method ("TCPTRACE_ATTACH_KFUNC").
std::string method_macro(AttachMethod method);

struct MethodSupport {
  bool available = false;
  std::string reason;  // why not, when unavailable
};

struct KernelCapabilities {
  MethodSupport kfunc;
  MethodSupport kprobe;
  MethodSupport tracepoint;
  MethodSupport ring_buffer;  // BPF_MAP_TYPE_RINGBUF (Linux 5.8+)
  const MethodSupport& of(AttachMethod method) const;
};

// `requested`: nullopt for auto. `offered`: the program's variants, best
// first. Auto picks the first offered method the kernel supports; an
// explicit request the kernel cannot do fails (exit 1) with the reason, one
// the program does not offer is a usage error (exit 2).
Result<AttachMethod> choose_attach_method(std::optional<AttachMethod> requested,
                                          const std::vector<AttachMethod>& offered,
                                          const KernelCapabilities& kernel);

}  // namespace tcptrace
