#include "attach_method.h"

namespace tcptrace {

std::string_view method_name(AttachMethod method) {
  switch (method) {
    case AttachMethod::kfunc: return "kfunc";
    case AttachMethod::kprobe: return "kprobe";
    case AttachMethod::tracepoint: return "tracepoint";
  }
  return "?";
}

std::optional<AttachMethod> method_from_name(std::string_view name) {
  for (AttachMethod m : {AttachMethod::kfunc, AttachMethod::kprobe, AttachMethod::tracepoint}) {
    if (method_name(m) == name) return m;
  }
  return std::nullopt;
}

std::string method_macro(AttachMethod method) {
  switch (method) {
    case AttachMethod::kfunc: return "TCPTRACE_ATTACH_KFUNC";
    case AttachMethod::kprobe: return "TCPTRACE_ATTACH_KPROBE";
    case AttachMethod::tracepoint: return "TCPTRACE_ATTACH_TRACEPOINT";
  }
  return "";
}

const MethodSupport& KernelCapabilities::of(AttachMethod method) const {
  switch (method) {
    case AttachMethod::kfunc: return kfunc;
    case AttachMethod::kprobe: return kprobe;
    case AttachMethod::tracepoint: return tracepoint;
  }
  return tracepoint;
}

Result<AttachMethod> choose_attach_method(std::optional<AttachMethod> requested,
                                          const std::vector<AttachMethod>& offered,
                                          const KernelCapabilities& kernel) {
  std::string offered_list;
  for (AttachMethod m : offered) offered_list += (offered_list.empty() ? "" : ", ") + std::string(method_name(m));
  if (requested) {
    bool is_offered = false;
    for (AttachMethod m : offered) is_offered = is_offered || m == *requested;
    if (!is_offered) {
      return usage_error("--attach " + std::string(method_name(*requested)) +
                         ": the program has no variant for it (it offers: " +
                         (offered_list.empty() ? std::string("none") : offered_list) + ")");
    }
    const MethodSupport& support = kernel.of(*requested);
    if (!support.available) {
      return runtime_error("--attach " + std::string(method_name(*requested)) + ": " + support.reason);
    }
    return *requested;
  }
  std::string reasons;
  for (AttachMethod m : offered) {
    const MethodSupport& support = kernel.of(m);
    if (support.available) return m;
    reasons += (reasons.empty() ? "" : "; ") + std::string(method_name(m)) + ": " + support.reason;
  }
  return runtime_error("no attach method the program offers works on this kernel (" + reasons + ")");
}

}  // namespace tcptrace
