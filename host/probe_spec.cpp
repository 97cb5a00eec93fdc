#include "probe_spec.h"

#include <cstring>

#include <array>

namespace tcptrace {
namespace {

struct Prefix {
  std::string_view text;
  ProbeKind kind;
};

// Longest prefixes first: "kretprobe__" must not be read as "kprobe__" + "…".
constexpr std::array kPrefixes = {
    Prefix{"raw_tracepoint__", ProbeKind::raw_tracepoint},
    Prefix{"tracepoint__", ProbeKind::tracepoint},
    Prefix{"kretprobe__", ProbeKind::kretprobe},
    Prefix{"kretfunc__", ProbeKind::kretfunc},
    Prefix{"kprobe__", ProbeKind::kprobe},
    Prefix{"kfunc__", ProbeKind::kfunc},
};

std::string_view prefix_of(ProbeKind kind) {
  for (const auto& p : kPrefixes) {
    if (p.kind == kind) return p.text;
  }
  return {};
}

}  // namespace

std::optional<ProbeSpec> probe_from_function_name(std::string_view function) {
  for (const auto& prefix : kPrefixes) {
    if (function.substr(0, prefix.text.size()) != prefix.text) continue;
    std::string_view rest = function.substr(prefix.text.size());
    if (rest.empty()) return std::nullopt;
    ProbeSpec spec;
    spec.kind = prefix.kind;
    spec.function = std::string(function);
    if (prefix.kind == ProbeKind::tracepoint) {
      // Category names contain no "__" (they are tracefs directory names like
      // "sock" or "syscalls"), so the first "__" separates category and event.
      const size_t sep = rest.find("__");
      if (sep == std::string_view::npos || sep == 0 || sep + 2 >= rest.size()) return std::nullopt;
      spec.category = std::string(rest.substr(0, sep));
      spec.target = std::string(rest.substr(sep + 2));
    } else {
      spec.target = std::string(rest);
    }
    return spec;
  }
  return std::nullopt;
}

std::string function_name_for(ProbeKind kind, std::string_view category, std::string_view target) {
  std::string name(prefix_of(kind));
  if (kind == ProbeKind::tracepoint) {
    name.append(category);
    name.append("__");
  }
  name.append(target);
  return name;
}

std::vector<ProbeSpec> attach_plan(const std::vector<std::string>& functions) {
  std::vector<ProbeSpec> plan;
  for (const auto& function : functions) {
    if (auto spec = probe_from_function_name(function)) plan.push_back(std::move(*spec));
  }
  return plan;
}

std::string_view kind_name(ProbeKind kind) {
  switch (kind) {
    case ProbeKind::tracepoint: return "tracepoint";
    case ProbeKind::raw_tracepoint: return "raw_tracepoint";
    case ProbeKind::kprobe: return "kprobe";
    case ProbeKind::kretprobe: return "kretprobe";
    case ProbeKind::kfunc: return "kfunc";
    case ProbeKind::kretfunc: return "kretfunc";
  }
  return "?";
}

std::string describe(const ProbeSpec& probe) {
  std::string text(kind_name(probe.kind));
  text.push_back(' ');
  if (probe.kind == ProbeKind::tracepoint) {
    text += probe.category + ":";
  }
  text += probe.target;
  return text;
}

namespace {

// The verifier's verdict is at the end of its log; keep the last lines.
std::string tail_lines(const char* log, size_t max_lines) {
  std::string text(log);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  size_t pos = text.size();
  for (size_t lines = 0; lines < max_lines && pos != std::string::npos && pos > 0; ++lines) {
    pos = text.rfind('\n', pos - 1);
  }
  std::string tail = pos == std::string::npos ? text : text.substr(pos + 1);
  for (char& c : tail) {
    if (c == '\n') c = ';';
  }
  return tail;
}

}  // namespace

Error verifier_refusal(const ProbeSpec& probe, int error, const char* verifier_log) {
  std::string message = "the kernel refused to load " + describe(probe) + " (" + probe.function +
                        "): " + std::strerror(error);
  if (verifier_log != nullptr && verifier_log[0] != '\0') message += "; verifier: " + tail_lines(verifier_log, 3);
  return runtime_error(message);
}

}  // namespace tcptrace
