// In-kernel aggregation: with --output none --metrics, a program that
// declares "tcptrace:aggregate" is compiled with TCPTRACE_AGGREGATE=1 and
// counts its events in per-CPU BPF arrays instead of sending them to a
// buffer; the host reads and sums the arrays when Prometheus scrapes and
// adds what grew to the same metric families the host-side path fills
// (metrics.h). Measured with scripts/bench-metrics: about a quarter of the
// CPU per event of host-side aggregation (README, Metrics).
//
// The contract between such a program and the host is this header: map
// names, their index layout and their value layout. A program may provide
// either or both sets of maps.
//
//   tcptrace_agg_transitions     per-CPU array of u64, kStates*kStates*2
//       index (old_state * kStates + new_state) * 2 + (family is IPv6)
//   tcptrace_agg_state_duration  per-CPU array of histograms, kStates
//       index old_state; time spent in it, for transitions whose start the
//       program saw (as delta_us != 0 on the host-side path)
//   tcptrace_agg_connect_latency per-CPU array of histograms, kOutcomes*2
//       index outcome * 2 + (family is IPv6); one observation per connect
//
// A histogram value is u64[buckets + 2]: the count of observations per
// bucket (not cumulative; the last bucket is +Inf), then their sum in µs.
// The program picks the bucket with TCPTRACE_STATE_DURATION_BUCKET(us) and
// TCPTRACE_CONNECT_LATENCY_BUCKET(us), which the host defines from the very
// bounds its histograms export, so the two paths cannot disagree.
//
// Everything here builds and is unit-tested without root or libbcc; the
// reading of the maps is bcc_backend's (read_percpu_array_sums).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tcptrace {

class Metrics;

namespace aggregate {
inline constexpr size_t kStates = 16;    // tcp_states.h values, masked to 4 bits
inline constexpr size_t kFamilies = 2;   // ipv4, ipv6
inline constexpr size_t kOutcomes = 16;  // connlat outcome values, masked to 4 bits
inline constexpr const char* kTransitionsMap = "tcptrace_agg_transitions";
inline constexpr const char* kStateDurationMap = "tcptrace_agg_state_duration";
inline constexpr const char* kConnectLatencyMap = "tcptrace_agg_connect_latency";

// Entries and u64 words per entry of each map.
size_t transitions_entries();
size_t state_duration_entries();
size_t state_duration_words();
size_t connect_latency_entries();
size_t connect_latency_words();
}  // namespace aggregate

// A C expression of `us` giving the bucket index of a value in µs: 0 for
// us <= bounds[0], ..., bounds.size() (+Inf) beyond the last bound. Bounds
// are seconds, as the histograms export them.
std::string bucket_index_expression(const std::vector<double>& bounds_seconds);

// The -D flags of the TCPTRACE_AGGREGATE variant.
std::vector<std::string> aggregation_cflags();

// One read of a program's maps, summed over CPUs, each flat in the map's
// index order (entries * words). Empty when the program has no such map.
struct AggregateSnapshot {
  std::vector<uint64_t> transitions;
  std::vector<uint64_t> state_duration;
  std::vector<uint64_t> connect_latency;
};

// Turns successive snapshots of one loaded program's maps into metric
// increments. The kernel's counts only grow while the program is loaded, so
// the difference to the previous snapshot is exactly what happened since;
// kept with the loaded program, so detaching and re-attaching it (--watch
// falling back) does not count anything twice.
class AggregateFeed {
 public:
  // Adds what grew since the previous snapshot to `metrics`; returns the
  // number of events that were (transitions plus connects).
  uint64_t feed(const AggregateSnapshot& now, Metrics& metrics);

 private:
  AggregateSnapshot seen_;
};

}  // namespace tcptrace
