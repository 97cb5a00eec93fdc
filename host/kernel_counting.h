// The C text that replaces each `tcptrace:output TABLE STRUCT` line
// (metric_declarations.h): the table and its submit function in the
// variant the run needs. With in-kernel counting, the program's declared
// metrics are counted in per-CPU arrays instead of sending events, with the
// label-slot and bucket arithmetic of metric_declarations.h written out in
// C, so both counting paths place every event in the same series.
//
// Kernel layout of metric k (declaration order): map `tcptrace_m<k>`, a
// per-CPU array with one entry per label combination, indexed
//   ((slot0 * slots1) + slot1) * slots2 + slot2 ...
// A counter's entry is a u64; a histogram's is u64[bounds + 2]: the count
// of observations per bucket (not cumulative, the last before the sum is
// +Inf), then their sum in the field's unit. `tcptrace_counted` counts the
// events submitted. Everything here builds and is unit-tested without root.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "metric_declarations.h"

namespace tcptrace {

class Metrics;

enum class OutputVariant { perf_buffer, ring_buffer, kernel_counts };

// The one-line replacement of an output declaration. `first`: the first
// output line of the program, which also declares the shared maps
// (tcptrace_lost and the others).
std::string output_replacement(const OutputDeclaration& output, bool first, OutputVariant variant,
                               size_t ring_buffer_pages, const std::vector<MetricDeclaration>& metrics,
                               size_t output_count);

// The program text with every output declaration line replaced.
std::string replace_output_lines(const std::string& source, const ProgramDeclarations& declarations,
                                 OutputVariant variant, size_t ring_buffer_pages);

// The C expression of a label's slot, of a bucket index, and of a condition,
// for the event pointer `e` (exposed for tests).
std::string label_slot_expression(const MetricLabel& label);
std::string bucket_expression(const std::vector<uint64_t>& bounds, const std::string& value);
std::string condition_expression(const MetricCondition& condition);

// Entries and u64 words per entry of metric `m`'s kernel array.
size_t kernel_entries(const MetricDeclaration& m);
size_t kernel_words(const MetricDeclaration& m);
std::string kernel_map_name(size_t metric_index);
inline constexpr const char* kCountedMap = "tcptrace_counted";

// One read of a program's count arrays, summed over CPUs: per metric, flat
// entry * words + word; `counted` is the events submitted.
struct KernelCountSnapshot {
  std::vector<std::vector<uint64_t>> metrics;
  uint64_t counted = 0;
};

// Turns successive snapshots of one loaded program's arrays into metric
// increments. The kernel's counts only grow while the program is loaded,
// so the difference to the previous snapshot is what happened since; kept
// with the loaded program, so detaching and re-attaching it (--watch
// falling back) counts nothing twice.
class KernelCountFeed {
 public:
  explicit KernelCountFeed(std::vector<MetricDeclaration> metrics) : metrics_(std::move(metrics)) {}
  // Adds what grew since the previous snapshot to `sink`; returns the events
  // that were submitted meanwhile.
  uint64_t feed(const KernelCountSnapshot& now, Metrics& sink);
  const std::vector<MetricDeclaration>& metrics() const { return metrics_; }

 private:
  std::vector<MetricDeclaration> metrics_;
  KernelCountSnapshot seen_;
};

}  // namespace tcptrace
