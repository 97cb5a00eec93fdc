// What a program asks to be attached to, read off its function names.
//
// BCC's probe macros generate the function names (bcc 0.26,
// src/cc/export/helpers.h), and libbcc derives the kernel-side program name
// and the kfunc BTF target from the same prefixes (libbpf.c,
// bcc_prog_load_xattr). This file is the one place that knows them:
//   TRACEPOINT_PROBE(cat, event)   -> tracepoint__<cat>__<event>
//   RAW_TRACEPOINT_PROBE(event)    -> raw_tracepoint__<event>
//   int kprobe__<fn>(…)            -> kprobe on <fn>
//   int kretprobe__<fn>(…)         -> kretprobe on <fn>
//   KFUNC_PROBE(fn, …)             -> kfunc__<fn>       (fentry)
//   KRETFUNC_PROBE(fn, …)          -> kretfunc__<fn>    (fexit)
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace tcptrace {

enum class ProbeKind { tracepoint, raw_tracepoint, kprobe, kretprobe, kfunc, kretfunc };

struct ProbeSpec {
  ProbeKind kind = ProbeKind::tracepoint;
  std::string function;  // the BPF function in the program
  std::string category;  // tracepoints only
  std::string target;    // tracepoint event, or kernel function
  bool operator==(const ProbeSpec&) const = default;
};

// nullopt for functions that are not probes (helpers, tail-call targets).
std::optional<ProbeSpec> probe_from_function_name(std::string_view function);

// The function name BCC generates for a probe (inverse of the above).
std::string function_name_for(ProbeKind kind, std::string_view category, std::string_view target);

// Every probe among `functions`, in the order given.
std::vector<ProbeSpec> attach_plan(const std::vector<std::string>& functions);

// "tracepoint sock:inet_sock_set_state", "kprobe tcp_v4_connect", ...
std::string describe(const ProbeSpec& probe);
std::string_view kind_name(ProbeKind kind);

// The error of a load the kernel refused: the errno and, when there is a
// verifier log, its last lines (the verifier's verdict is at its end).
Error verifier_refusal(const ProbeSpec& probe, int error, const char* verifier_log);

}  // namespace tcptrace
