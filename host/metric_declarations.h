// Metrics a program declares next to its code, in comment lines like its
// format hints (format_hints.h), and the output tables whose submit code the
// host writes for it. The host knows no program: every metric it serves
// comes from these lines (metrics.h counts them from decoded events,
// kernel_counting.h generates the BPF C that counts them in the kernel).
//
//   tcptrace:output TABLE STRUCT
//       On a comment line of its own, after `struct STRUCT` is complete. The
//       host replaces that line with the table's declaration and a function
//       `int tcptrace_submit_TABLE(void *ctx, struct STRUCT *e)` (0: sent),
//       in the variant the run needs: a ring buffer or perf buffers (with
//       losses counted, --buffer), or, with in-kernel counting, the per-CPU
//       arrays of the declared metrics and the code that counts in them.
//       The replacement is one line, so every other line keeps its number.
//
//   tcptrace:metric counter NAME [labels=...] [value=FIELD] [when=COND]... help="TEXT"
//   tcptrace:metric histogram NAME value=FIELD unit=UNIT buckets=SPEC [labels=...] [when=COND]... help="TEXT"
//       labels=L,L,...  each L is FIELD or LABEL:FIELD, with a trailing '?'
//                       for an opt-in label (--metrics-label LABEL). A label's
//                       values come from the field's format hint: enum(...)
//                       names (larger values: "unknown"), tcp_state names,
//                       ipv4/ipv6/other for the family field of an ip() hint;
//                       otherwise the field's value 0-255 (larger: "other").
//                       An opt-in label without such a hint (a port) keeps
//                       the first --metrics-label-limit values it sees and
//                       folds the rest into "other", in the host only.
//       value=FIELD     histogram: the observed value; counter: added per
//                       event instead of 1.
//       unit=UNIT       ns, us, ms, s (exported in seconds), bytes or none.
//       buckets=SPEC    upper bounds in the exported unit, increasing:
//                       a list (0.0001,0.001 or 100us,1ms for time units),
//                       exp(START,FACTOR,COUNT), or log2(LOW,HIGH): LOW, 2LOW,
//                       4LOW, ... up to the first bound >= HIGH. +Inf is
//                       implicit. Bounds are rounded down to the field's unit.
//       when=FIELD OP N an event is observed only if this holds (OP: == !=
//                       < <= > >=); several when= must all hold.
//       help="TEXT"     the HELP line.
//       table=TABLE     which output table's events (needed with several).
//   A line ending in '\' continues on the next comment line.
//
//   tcptrace:metric histogram NAME map=MAP [labels=...] help="TEXT"
//   tcptrace:metric counter NAME map=MAP [labels=...] help="TEXT"
//       Read from one of the program's tables (table_reader.h) instead of
//       its events, as ebpf_exporter reads maps: a log2 histogram
//       (BPF_HISTOGRAM) becomes a Prometheus histogram with bounds 2^i - 1
//       in the unit of its tcptrace:tables entry (seconds, bytes), a count
//       map a counter of the running total. Labels name members of the
//       map's key (`key` for a scalar key); their values follow the same
//       rules as above, and an opt-in label without a closed set (an
//       address, a port) keeps the first --metrics-label-limit values the
//       host reads and folds the rest (and a null value) into "other". Key
//       members that are not labels are summed over. value=, unit=,
//       buckets=, when= and table= do not go with map=; the map's own
//       tcptrace_table_* series are replaced by this metric.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "format_hints.h"
#include "result.h"

namespace tcptrace {

inline constexpr std::string_view kOutputMarker = "tcptrace:output";
inline constexpr std::string_view kMetricMarker = "tcptrace:metric";

struct OutputDeclaration {
  std::string table;
  std::string struct_name;
  size_t line = 0;
};

enum class MetricKind { counter, histogram };

// Where a label's values come from, decided from the format hints alone so
// the kernel code can be generated before anything compiles.
enum class LabelDomain {
  names,      // enum(...) hint: slot v for v < names, then "unknown"
  tcp_state,  // 16 slots named by tcp_state_name, 0 "UNKNOWN" (values >= 16 too)
  family,     // ipv4, ipv6, other
  small,      // 0..255, then "other"
  folded,     // first N values seen, then "other" (host only, opt-in only)
};

struct MetricLabel {
  std::string name;   // the Prometheus label
  std::string field;  // the event field it is read from
  bool opt_in = false;
  LabelDomain domain = LabelDomain::small;
  std::vector<std::string> names;  // LabelDomain::names
};

enum class CompareOp { eq, ne, lt, le, gt, ge };

struct MetricCondition {
  std::string field;
  CompareOp op = CompareOp::ne;
  int64_t constant = 0;
};

struct MetricDeclaration {
  MetricKind kind = MetricKind::counter;
  std::string name;
  std::string help;
  std::string table;  // empty: the program's only output table
  std::string map;    // map=: read from this table of the program, not from events
  std::vector<MetricLabel> labels;
  std::string value_field;  // histogram: required; counter: optional
  std::string unit = "none";
  uint64_t unit_divisor = 1;  // field units per exported unit (us: 1 000 000)
  std::vector<uint64_t> bounds;  // histogram: upper bounds in field units, increasing
  std::vector<MetricCondition> conditions;
  size_t line = 0;

  // The exported bounds: each field-unit bound divided by unit_divisor.
  std::vector<double> exported_bounds() const;
};

struct ProgramDeclarations {
  std::vector<OutputDeclaration> outputs;
  std::vector<MetricDeclaration> metrics;      // counted from events (host or kernel)
  std::vector<MetricDeclaration> map_metrics;  // map=: read from the program's tables
};

// Parses every tcptrace:output and tcptrace:metric line of `source`. Each
// mistake is one "PATH:LINE: ..." line; all of them are returned (joined by
// '\n' in the error), the caller prints each.
Result<ProgramDeclarations> parse_program_declarations(std::string_view source, const std::string& path,
                                                       const std::vector<FormatHint>& hints);

// Label slots of one label in the arithmetic both counting paths share.
size_t label_slots(const MetricLabel& label, size_t folded_limit);
// A label slot's value as exported (not for LabelDomain::folded).
std::string label_value(const MetricLabel& label, size_t slot);
// The slot of a raw field value (not for LabelDomain::folded).
size_t label_slot(const MetricLabel& label, uint64_t value);
// Whether a condition holds for a raw value read from a field of the given
// signedness (read sign-extended into int64 for signed fields).
bool condition_holds(const MetricCondition& condition, uint64_t raw, bool is_signed);
std::string_view compare_op_text(CompareOp op);

// Kernel arrays hold at most this many label combinations per metric, and a
// histogram at most this many bounds: a declaration beyond either is refused
// before anything loads.
inline constexpr size_t kMaxKernelLabelSets = 4096;
inline constexpr size_t kMaxBuckets = 64;

}  // namespace tcptrace
