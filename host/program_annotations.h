// What a program declares about itself in comment lines, next to its format
// hints (format_hints.h), so the host needs no private knowledge of any
// program, built-in or not:
//
//   // tcptrace:attach kfunc kprobe tracepoint
//       The program has variants for these attach methods, in order of
//       preference; the host defines TCPTRACE_ATTACH_<METHOD>=1 for the one
//       it picks (--attach). Without this line the program's probes are
//       attached as declared.
//   // tcptrace:buffers ringbuf perf
//       The program can write to a ring buffer or to perf buffers; the host
//       defines TCPTRACE_RINGBUF=1 (and TCPTRACE_RINGBUF_PAGES) for the
//       ring buffer (--buffer). (Tables declared with tcptrace:output
//       have both variants without this line.) A program that counts the submits that
//       failed (a full ring or perf buffer) in a per-CPU u64 array
//       `tcptrace_lost` has them reported from there; without it, a perf
//       buffer's own lost records are reported (they arrive only once a
//       later sample fits) and a ring buffer's drops go unseen.
//   // tcptrace:filters sport dport family pid min-us no-failures
//       The filter options the program honours (filters/tcptrace_filter.h);
//       giving any other filter option is a usage error rather than a filter
//       silently ignored. Without this line, no filter options are accepted.
//   // tcptrace:output TABLE STRUCT    and    // tcptrace:metric ...
//       The output tables whose submit code the host writes, and the
//       metrics the program declares: metric_declarations.h.
//   // tcptrace:seed tcp-listeners=MAP tcp-connections=MAP
//       Before "ready", the host fills these maps with the owners of the
//       sockets that existed before the tracer (filters/tcptrace_owner.h
//       gives their key and value types, checked when the program loads),
//       and defines the offsets tcptrace_socket_netns() reads a socket's
//       network namespace at, from the kernel's BTF.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "attach_method.h"
#include "result.h"

namespace tcptrace {

// What the host fills a seeded map with (tcptrace:seed).
enum class SeedKind { tcp_listeners, tcp_connections };

struct SeedDeclaration {
  SeedKind kind;
  std::string map;
};

std::string_view seed_kind_name(SeedKind kind);

struct ProgramAnnotations {
  std::vector<AttachMethod> attach_methods;  // empty: no variants
  std::vector<std::string> filters;          // option names without "--"
  bool ring_buffer_capable = false;          // tcptrace:buffers lists ringbuf
  std::vector<SeedDeclaration> seeds;        // tcptrace:seed, one per kind at most
  bool honours(std::string_view filter) const;
};

Result<ProgramAnnotations> parse_program_annotations(std::string_view source);

// Option names (without "--") of every filter option the host knows.
const std::vector<std::string>& known_filter_names();

}  // namespace tcptrace
