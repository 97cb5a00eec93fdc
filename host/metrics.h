// Prometheus metrics: the tool's own health, and the metrics a program
// declares (metric_declarations.h), counted from the same decoded fields as
// the JSON lines or from the arrays the program counted in the kernel
// (kernel_counting.h feeds them through add_kernel_*). The host knows no
// program: names, labels, buckets and values all come from the
// declarations. Everything here builds and is unit-tested without root or
// libbcc; serving /metrics over HTTP is metrics_server.{h,cpp}.
//
// Cardinality is bounded by construction: every label takes its values
// from a closed set (metric_declarations.h), except opt-in labels without
// one (a port), which keep at most --metrics-label-limit distinct values
// and fold the rest into "other".
//
// The per-event path allocates nothing once a label combination has been
// seen: children are looked up in arrays indexed by label slots and created
// on first use (creating all 16 x 16 x 3 transitions up front would export
// hundreds of zero series from every node).
#pragma once

#include <climits>
#include <map>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "event_layout.h"
#include "format_hints.h"
#include "metric_declarations.h"
#include "result.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace tcptrace {

// --metrics ADDR: an IP literal and a port, "127.0.0.1:9464", "0.0.0.0:9464"
// or "[::1]:9464". Port 0 picks a free port (reported when serving starts).
struct MetricsAddress {
  std::string host;  // without brackets
  uint16_t port = 0;
  bool ipv6 = false;

  // The form civetweb's listening_ports option takes.
  std::string listen_spec() const;
  // host:port as a URL authority ("[::1]:9464").
  std::string authority(uint16_t actual_port) const;
};

Result<MetricsAddress> parse_metrics_address(std::string_view text);

// Folds an unbounded label (a port) into at most `limit` distinct values:
// the first `limit` values seen keep their own slot, every later one shares
// the "other" slot. slot() never allocates.
class LabelFolder {
 public:
  explicit LabelFolder(size_t limit);
  // 0..limit-1: a value's own slot; limit: "other".
  size_t slot(uint64_t value);
  size_t other_slot() const { return limit_; }
  size_t slots() const { return limit_ + 1; }
  // The label value of a slot: the number, or "other".
  std::string label(size_t slot) const;

 private:
  size_t limit_;
  std::vector<uint64_t> values_;          // value of each slot in use
  std::vector<uint16_t> slot_of_small_;   // slot + 1 per value below 65536; 0 = none yet
};

struct MetricsConfig {
  std::vector<std::string> opt_in_labels;  // --metrics-label, each a label name
  size_t label_limit = 10;                 // --metrics-label-limit
  std::string version;                     // for tcptrace_build_info
  std::string bcc_version;
};

// Limits of --metrics-label-limit.
inline constexpr size_t kDefaultLabelLimit = 10;
inline constexpr size_t kMaxLabelLimit = 100;

// Where a declared metric reads an event's fields (host-side counting).
struct FieldRef {
  size_t offset = 0;
  size_t size = 0;  // 1, 2, 4 or 8
  bool is_signed = false;
};

// A declared metric and, when counted in the host, the output table whose
// events it observes with the fields found in that table's layout.
struct BoundMetric {
  MetricDeclaration declaration;
  size_t table_index = SIZE_MAX;  // SIZE_MAX: counted in the kernel
  std::vector<FieldRef> labels;   // one per declared label
  std::optional<FieldRef> value;
  std::vector<FieldRef> conditions;  // one per condition
};

// Finds each declared metric's fields in its table's layout: a field that is
// missing, or is not a plain integer, is one "PATH:LINE: ..." line per
// mistake (joined by '\n'). layouts[i] is table i's, or null.
Result<std::vector<BoundMetric>> bind_metric_fields(const std::vector<MetricDeclaration>& metrics,
                                                    const std::vector<std::string>& table_names,
                                                    const std::vector<const EventLayout*>& layouts,
                                                    const std::string& path);

// The same metrics, counted in the kernel: no fields to read.
std::vector<BoundMetric> kernel_counted_metrics(const std::vector<MetricDeclaration>& metrics);

class Metrics {
 public:
  explicit Metrics(MetricsConfig config);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Makes `metrics` the program's metrics. On a --watch swap, a metric
  // declared as before (name, kind, help, labels, buckets, unit) keeps its
  // series and counts; one that changed starts afresh; one no longer
  // declared disappears. Returns the metric names, for the ready line.
  std::string bind(std::vector<BoundMetric> metrics);

  // One event of table `table_index`, at least as long as its layout (the
  // caller checks). Counts it in tcptrace_events_total too.
  void observe(size_t table_index, const void* data);

  // Counts from the kernel, as they grew since the last read: entry `index`
  // of metric `metric` (kernel_counting.h). bucket_increments: one per bucket
  // bound, then +Inf, as prometheus::Histogram::ObserveMultiple takes them.
  void add_kernel_counter(size_t metric, size_t index, uint64_t count);
  void add_kernel_histogram(size_t metric, size_t index, const std::vector<double>& bucket_increments,
                            double sum);
  void add_events(uint64_t count);

  // The declared metrics' series as they stand, for the reports of
  // metrics_report.h. Histogram buckets are not cumulative, the last +Inf.
  struct SeriesValues {
    std::map<std::string, std::string> labels;
    double value = 0;                  // counter
    std::vector<uint64_t> buckets;     // histogram
    double sum = 0;
  };
  struct MetricValues {
    const MetricDeclaration* declaration = nullptr;
    std::vector<SeriesValues> series;
  };
  std::vector<MetricValues> declared_values() const;

  void add_lost_buffer(uint64_t count);
  void add_skipped_runs(uint64_t count);
  void add_truncated();
  void set_probes_attached(size_t count);
  // aggregation: "host" or "kernel"; buffer: "ringbuf", "perf" or "none".
  void set_program(const std::string& name, const std::string& attach, const std::string& buffer,
                   const std::string& aggregation);

 private:
  struct Series;
  // A metric's labels in use: all declared ones but opt-in labels not asked for.
  std::vector<size_t> active_labels(const MetricDeclaration& declaration) const;
  std::string signature(const MetricDeclaration& declaration) const;
  void create_series(Series& series);
  prometheus::Counter& counter(Series& series, size_t index);
  prometheus::Histogram& histogram(Series& series, size_t index);
  size_t kernel_to_host_index(const Series& series, size_t kernel_index) const;

  MetricsConfig config_;
  std::shared_ptr<prometheus::Registry> registry_;

  // Health.
  prometheus::Counter* events_ = nullptr;
  prometheus::Counter* lost_buffer_ = nullptr;
  prometheus::Counter* lost_skipped_ = nullptr;
  prometheus::Counter* lost_truncated_ = nullptr;
  prometheus::Gauge* probes_attached_ = nullptr;
  prometheus::Family<prometheus::Gauge>* program_info_ = nullptr;
  prometheus::Gauge* program_info_child_ = nullptr;

  std::vector<std::unique_ptr<Series>> series_;  // in declaration order
};

}  // namespace tcptrace
