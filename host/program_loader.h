// From a program's source to verified, loaded BPF functions: what to pass
// to BCC (filters, user macros, the attach variant), which headers to compile
// against, and how to decode each output table. Attaching is the caller's.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "attach_method.h"
#include "bcc_backend.h"
#include "btf_offsets.h"
#include "event_decoder.h"
#include "format_hints.h"
#include "kernel_counting.h"
#include "metric_declarations.h"
#include "metrics.h"
#include "kernel_headers.h"
#include "options.h"
#include "program_annotations.h"
#include "program_source.h"
#include "table_reader.h"
#include "wall_clock.h"

namespace tcptrace {

class CompileCache;

struct BuildPlan {
  std::string name;  // --program NAME, or the file's stem
  ProgramSource source;
  std::vector<FormatHint> hints;
  ProgramAnnotations annotations;
  ProgramDeclarations declarations;  // tcptrace:output and tcptrace:metric lines
  std::string text;                  // handed to BCC: the source, output lines replaced
  std::vector<std::string> cflags;
  std::optional<AttachMethod> method;
  bool ring_buffer = false;  // TCPTRACE_RINGBUF chosen
  bool aggregate_in_kernel = false;  // metrics counted in the kernel (kernel_counting.h)
  std::vector<std::string> opt_in_labels;  // --metrics-label
  // tcptrace:seed: whether keys carry the network namespace (the kernel has
  // BTF), and if not, why not.
  bool seed_by_netns = false;
  std::string seed_netns_missing;
  // tcptrace:offsets, as found in the kernel's BTF (defined) or not.
  std::vector<ResolvedOffset> offsets;
};

// Reads what the program declares, checks the filter options against it,
// and picks the attach variant (probing the kernel when it has to).
Result<BuildPlan> plan_build(const Options& options, const ProgramLocations& where, ProgramSource source);

// --print-source: the exact text and flags handed to BCC.
std::string render_source_for_print(const BuildPlan& plan, const HeaderChoice& headers);

// The arrays of a program counting its metrics in the kernel, and how much
// of their counts has gone into the metrics so far.
struct KernelCounts {
  std::vector<UniqueFd> metric_maps;  // tcptrace_m<k>, in declaration order
  UniqueFd counted;                   // tcptrace_counted
  KernelCountFeed feed;
};

// One read of the arrays, summed over CPUs.
KernelCountSnapshot read_kernel_counts(const KernelCounts& counts);

// A map the host fills with socket owners before "ready" (tcptrace:seed).
struct SeededMap {
  SeedKind kind;
  std::string name;
  UniqueFd fd;
  uint32_t capacity = 0;  // max_entries: an LRU map evicts past it
};

struct LoadedProgram {
  BuildPlan plan;
  std::vector<bcc::OutputTable> tables;  // map_fd: one of table_fds
  std::vector<UniqueFd> table_fds;       // our own duplicates: valid after the module is gone
  UniqueFd lost_counter;                 // per-CPU u64 array `tcptrace_lost`, if the program has one
  std::vector<std::string> table_names;
  std::vector<std::optional<EventDecoder>> decoders;
  std::vector<ProbeSpec> probes;
  std::vector<bcc::LoadedFunction> functions;
  std::optional<KernelCounts> kernel_counts;  // plan.aggregate_in_kernel
  std::vector<BoundMetric> metrics;           // the declared metrics, bound to tables or kernel arrays
  std::vector<SeededMap> seeded_maps;
  // The program's own tables (tcptrace:tables, table_reader.h), with our
  // own fds of their maps: data_table_fds[i] is data_tables[i]'s.
  std::vector<TableView> data_tables;
  std::vector<UniqueFd> data_table_fds;
};

// Compiles (twice when an event struct nests structs, to learn their
// layout), builds the decoders and loads every probe through the verifier.
// Compiler diagnostics are printed on stderr, pointing at the program file.
// The compiled module (LLVM's context, BCC's tables) is dropped before this
// returns: the loaded programs hold their maps in the kernel, and the output
// tables are reached through duplicated fds, so the run keeps no compiler
// memory.
//
// With a cache, a program whose inputs (compile_inputs.h) match an entry is
// loaded from it without compiling; otherwise it is compiled and stored.
// Either way one "cache: ..." line on stderr says which.
struct CacheUse {
  CompileCache* cache = nullptr;  // nullptr: always compile, store nothing
  std::string tool_version;
  std::string bcc_version;
  // Read tracepoint formats for the key below this directory instead of
  // tracefs (the tests' stand-in: TCPTRACE_TEST_TRACEPOINT_FORMATS).
  std::optional<std::string> tracepoint_format_root;
};
Result<std::unique_ptr<LoadedProgram>> compile_and_load(BuildPlan plan, const HeaderChoice& headers,
                                                        const std::string& running_release, const WallClock& clock,
                                                        const CacheUse& cache);

// Fills the program's seeded maps from the kernel's socket table; call it
// once the probes are attached, so no socket falls between the two. Returns
// the line to report: what was seeded, or why nothing could be (not fatal:
// owners of older sockets are then unknown, as without seeding).
std::string seed_socket_owners(const LoadedProgram& loaded);

// --check: the attach plan and each output table's layout, as one JSON object.
std::string check_report_json(const LoadedProgram& loaded);

}  // namespace tcptrace
