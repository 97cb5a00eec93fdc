#include "kernel_aggregation.h"

#include <cmath>

#include "metrics.h"

namespace tcptrace {

namespace aggregate {
size_t transitions_entries() { return kStates * kStates * kFamilies; }
size_t state_duration_entries() { return kStates; }
size_t state_duration_words() { return state_duration_buckets().size() + 2; }
size_t connect_latency_entries() { return kOutcomes * kFamilies; }
size_t connect_latency_words() { return connect_latency_buckets().size() + 2; }
}  // namespace aggregate

std::string bucket_index_expression(const std::vector<double>& bounds_seconds) {
  // A chain of comparisons, smallest bound first: clang turns it into a few
  // compares and selects, no loop and no map (the verifier sees constants).
  std::string text = "(";
  for (size_t i = 0; i < bounds_seconds.size(); ++i) {
    const auto us = static_cast<unsigned long long>(std::llround(bounds_seconds[i] * 1e6));
    text += "(us) <= " + std::to_string(us) + "ULL ? " + std::to_string(i) + " : ";
  }
  return text + std::to_string(bounds_seconds.size()) + ")";
}

std::vector<std::string> aggregation_cflags() {
  return {
      "-DTCPTRACE_AGGREGATE=1",
      "-DTCPTRACE_STATE_DURATION_BUCKETS=" + std::to_string(state_duration_buckets().size() + 1),
      "-DTCPTRACE_STATE_DURATION_BUCKET(us)=" + bucket_index_expression(state_duration_buckets()),
      "-DTCPTRACE_CONNECT_LATENCY_BUCKETS=" + std::to_string(connect_latency_buckets().size() + 1),
      "-DTCPTRACE_CONNECT_LATENCY_BUCKET(us)=" + bucket_index_expression(connect_latency_buckets()),
  };
}

namespace {

// What grew in entry `index` of a flat map read, as the histogram wants it:
// bucket increments, then the sum's increment in seconds. Returns the
// number of observations added.
double histogram_growth(const std::vector<uint64_t>& now, const std::vector<uint64_t>& seen, size_t index,
                        size_t words, std::vector<double>& buckets, double& sum_seconds) {
  const size_t base = index * words;
  const auto grew = [&](size_t word) {
    const uint64_t before = seen.empty() ? 0 : seen[base + word];
    return now[base + word] >= before ? now[base + word] - before : 0;
  };
  double observations = 0;
  buckets.assign(words - 1, 0);
  for (size_t b = 0; b + 1 < words; ++b) {
    buckets[b] = static_cast<double>(grew(b));
    observations += buckets[b];
  }
  sum_seconds = static_cast<double>(grew(words - 1)) / 1e6;
  return observations;
}

}  // namespace

uint64_t AggregateFeed::feed(const AggregateSnapshot& now, Metrics& metrics) {
  using namespace aggregate;
  uint64_t events = 0;
  if (now.transitions.size() == transitions_entries()) {
    for (size_t i = 0; i < now.transitions.size(); ++i) {
      const uint64_t before = seen_.transitions.empty() ? 0 : seen_.transitions[i];
      if (now.transitions[i] <= before) continue;
      const uint64_t grew = now.transitions[i] - before;
      const size_t family = i % kFamilies;
      const size_t pair = i / kFamilies;
      metrics.add_transitions(pair / kStates, pair % kStates, family, grew);
      events += grew;
    }
    seen_.transitions = now.transitions;
  }
  std::vector<double> buckets;
  double sum_seconds = 0;
  if (now.state_duration.size() == state_duration_entries() * state_duration_words()) {
    for (size_t state = 0; state < state_duration_entries(); ++state) {
      if (histogram_growth(now.state_duration, seen_.state_duration, state, state_duration_words(), buckets,
                           sum_seconds) > 0) {
        metrics.add_state_durations(state, buckets, sum_seconds);
      }
    }
    seen_.state_duration = now.state_duration;
  }
  if (now.connect_latency.size() == connect_latency_entries() * connect_latency_words()) {
    for (size_t i = 0; i < connect_latency_entries(); ++i) {
      const double added = histogram_growth(now.connect_latency, seen_.connect_latency, i, connect_latency_words(),
                                            buckets, sum_seconds);
      if (added == 0) continue;
      metrics.add_connects(i / kFamilies, i % kFamilies, buckets, sum_seconds);
      events += static_cast<uint64_t>(added);
    }
    seen_.connect_latency = now.connect_latency;
  }
  if (events > 0) metrics.add_events(events);
  return events;
}

}  // namespace tcptrace
