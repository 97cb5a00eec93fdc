// A program's declared metrics for people and pipes, as bpftrace prints its
// maps: with --interval every SECONDS, and at the end with --output text or
// --interval. JSON: one line per metric, {"event": NAME, "time": ..., and per
// label set the count (counter) or the buckets, count and sum (histogram)};
// text: counters as "NAME{labels} VALUE", histograms as bcc's
// print_log2_hist draws them, rows between the declared bounds in the
// field's unit. Each print shows what grew since the previous one (like
// bcc's tools, which clear their maps), or the totals with --accumulate.
// Builds and is unit-tested without root or libbcc.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "metrics.h"
#include "wall_clock.h"

namespace tcptrace {

class MetricsReport {
 public:
  MetricsReport(const Metrics& metrics, bool text, bool accumulate, const WallClock& clock)
      : metrics_(metrics), text_(text), accumulate_(accumulate), clock_(clock) {}

  // The report of the declared metrics now; "" when none is declared.
  std::string render();

 private:
  const Metrics& metrics_;
  bool text_;
  bool accumulate_;
  const WallClock& clock_;
  // Values at the previous report, by series ("NAME{labels}" and bucket).
  std::map<std::string, std::vector<double>> previous_;
};

// bcc's print_log2_hist drawing for arbitrary bounds: one row per bucket,
// "low -> high : count |stars|", the last "high" is the open end.
std::string bounded_histogram_text(const std::vector<uint64_t>& bounds, const std::vector<uint64_t>& counts,
                                   const std::string& value_type);

}  // namespace tcptrace
