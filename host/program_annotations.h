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
//   // tcptrace:tables NAME NAME=UNIT ...
//       The maps the host reads and prints (--interval, and once at exit)
//       and exports (--metrics), instead of every histogram and every hash
//       or array with integer values (table_reader.h). Listing a map also
//       says its counts may be cleared after each read, as bcc's tools do;
//       maps found without a list are read but never cleared, as the host
//       cannot tell a counter from state the program keeps (a start time per
//       thread). UNIT (ns, us, ms, s, bytes) is what a histogram counts:
//       its text header says "usecs" and so on, and its metric is exported
//       in seconds or bytes. A map that does not exist or does not hold
//       integers is an error when the program loads, unless its name ends
//       in "?" (NAME? or NAME=UNIT?): a table the program may leave out,
//       e.g. one it declares only under a macro that selects a mode.
//   // tcptrace:offsets NAME=STRUCT.MEMBER[.MEMBER...] ...
//       Byte offsets of kernel struct members in the running kernel, from
//       its BTF (btf_offsets.h), for a program that reads a kernel object at
//       an address a tracepoint record gives it: the installed headers need
//       not match the running kernel. The host defines
//       TCPTRACE_OFFSET_<NAME> for each member it finds, and leaves it
//       undefined when the kernel has no BTF, no such struct, or no such
//       member at a whole byte, so the program tests #ifdef and falls back
//       (or stops with #error); --check and --print-source show which.
//       Members are found through anonymous structs and unions, as C finds
//       them; each further MEMBER is one of the previous member's (a struct
//       or union). It also tells a program whether a member exists: a
//       tracepoint record is `struct trace_event_raw_<EVENT>` in BTF.
//
// Histograms are the maps a program declares with BPF_HISTOGRAM(NAME, ...)
// or BPF_TABLE("histogram", ..., NAME, ...): BCC keeps no trace of that
// macro (an int-keyed histogram is a plain array of u64), so the host reads
// it from the source, as it reads the annotations.
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

// What a histogram's values measure (tcptrace:tables NAME=UNIT).
enum class TableUnit { none, ns, us, ms, s, bytes };

struct TableDeclaration {
  std::string map;
  TableUnit unit = TableUnit::none;
  bool optional = false;  // NAME?: no error when the program has no such map
};

std::string_view table_unit_name(TableUnit unit);  // "us"; "" for none

// A member offset the program asks for (tcptrace:offsets NAME=STRUCT.PATH).
struct OffsetDeclaration {
  std::string name;         // TCPTRACE_OFFSET_<name>
  std::string struct_name;  // without "struct"
  std::string member_path;  // "a.b.c"
};

struct ProgramAnnotations {
  std::vector<AttachMethod> attach_methods;  // empty: no variants
  std::vector<std::string> filters;          // option names without "--"
  bool ring_buffer_capable = false;          // tcptrace:buffers lists ringbuf
  std::vector<SeedDeclaration> seeds;        // tcptrace:seed, one per kind at most
  bool tables_listed = false;                // a tcptrace:tables line exists
  std::vector<TableDeclaration> tables;      // tcptrace:tables, each map once
  std::vector<std::string> histograms;       // maps declared BPF_HISTOGRAM(NAME...)
  std::vector<OffsetDeclaration> offsets;    // tcptrace:offsets, each name once
  bool is_histogram(std::string_view map) const;
  const TableDeclaration* listed_table(std::string_view map) const;
  bool honours(std::string_view filter) const;
};

Result<ProgramAnnotations> parse_program_annotations(std::string_view source);

// The names of the maps `source` declares with BPF_HISTOGRAM(NAME, ...) or
// BPF_TABLE("histogram", KEY, VALUE, NAME, ...), each once, in order.
std::vector<std::string> histogram_declarations(std::string_view source);

// Option names (without "--") of every filter option the host knows.
const std::vector<std::string>& known_filter_names();

}  // namespace tcptrace
