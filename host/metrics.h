// Prometheus metrics made from the same decoded fields as the JSON lines
// (--metrics), or from counts a program kept in the kernel
// (kernel_aggregation.h feeds them through the add_* calls into the same
// families). Everything here builds and is unit-tested without root or
// libbcc; serving /metrics over HTTP is metrics_server.{h,cpp}.
//
// A program's metrics follow from the fields its events carry, read by name
// from the layout BCC described (no host-side copy of a struct):
//   oldstate, newstate, family, delta_us  (states)  -> state transitions and
//                                                      time spent per state
//   outcome, family, latency_us           (connlat) -> connects by outcome,
//                                                      connect latency
// Any program (a --program-file too) also gets the tool's own health
// metrics: events, losses by reason, probes attached, build info.
//
// Cardinality is bounded by construction: labels take values from closed
// sets (state names, outcome names, ipv4/ipv6), except the opt-in dport
// label, which keeps at most `dport_limit` distinct ports and folds the rest
// into "other".
//
// The per-event path allocates nothing once a label combination has been
// seen: children are looked up in arrays indexed by the raw field values and
// created on first use (creating all 13 x 13 x 2 transitions up front would
// export hundreds of zero series from every node).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "event_layout.h"
#include "format_hints.h"
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

// Bucket upper bounds (seconds), increasing; +Inf is implicit.
// Connect latency: 50 µs (a loopback connect) to 10 s (several SYN
// retransmissions), steps of 1-2.5-5 per decade.
const std::vector<double>& connect_latency_buckets();
// Time spent in a TCP state: 100 µs to one hour (ESTABLISHED lasts long).
const std::vector<double>& state_duration_buckets();

// Folds an unbounded label (a port) into at most `limit` distinct values:
// the first `limit` ports seen keep their own slot, every later one shares
// the "other" slot. slot() never allocates.
class PortLabelFolder {
 public:
  explicit PortLabelFolder(size_t limit);
  // 0..limit-1: a port's own slot; limit: "other".
  size_t slot(uint16_t port);
  size_t other_slot() const { return limit_; }
  size_t slots() const { return limit_ + 1; }
  // The label value of a slot: the port number, or "other".
  std::string label(size_t slot) const;

 private:
  size_t limit_;
  std::vector<uint16_t> ports_;                // port of each slot in use
  std::vector<uint16_t> slot_of_port_;         // slot + 1 per port; 0 = none yet
};

struct MetricsConfig {
  bool dport_label = false;  // --metrics-label dport
  size_t dport_limit = 10;   // --metrics-label-limit
  std::string version;       // for tcptrace_build_info
  std::string bcc_version;
};

// Limits of --metrics-label-limit.
inline constexpr size_t kDefaultDportLimit = 10;
inline constexpr size_t kMaxDportLimit = 100;

class Metrics {
 public:
  explicit Metrics(MetricsConfig config);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Chooses the metrics of each output table from its layout's fields and
  // the program's format hints (outcome names). layouts[i] is table i's, or
  // null for a table that carries no struct. Replaces an earlier binding
  // (--watch). Returns what the program's events feed, for the ready line:
  // "states", "connlat", both ("states, connlat"), or "" (health only).
  std::string bind(const std::vector<const EventLayout*>& layouts, const std::vector<FormatHint>& hints);
  // The same for a program that aggregates in the kernel
  // (kernel_aggregation.h): `states` and `connlat` say which of its maps it
  // has; the counts then arrive through the add_* calls below.
  std::string bind_aggregates(bool states, bool connlat, const std::vector<FormatHint>& hints);

  // One event of table `table_index`, at least as long as its layout (the
  // caller checks). Counts it in tcptrace_events_total too.
  void observe(size_t table_index, const void* data);

  // Counts aggregated in the kernel, as they grew since the last read.
  // family: 0 ipv4, 1 ipv6. bucket_increments: one per bucket bound, then
  // +Inf, as prometheus::Histogram::ObserveMultiple takes them.
  void add_transitions(size_t old_state, size_t new_state, size_t family, uint64_t count);
  void add_state_durations(size_t state, const std::vector<double>& bucket_increments, double sum_seconds);
  void add_connects(size_t outcome, size_t family, const std::vector<double>& bucket_increments,
                    double sum_seconds);
  void add_events(uint64_t count);

  void add_lost_buffer(uint64_t count);
  void add_skipped_runs(uint64_t count);
  void add_truncated();
  void set_probes_attached(size_t count);
  // aggregation: "host" or "kernel"; buffer: "ringbuf", "perf" or "none".
  void set_program(const std::string& name, const std::string& attach, const std::string& buffer,
                   const std::string& aggregation);

 private:
  struct Field {
    size_t offset = 0;
    size_t size = 0;
  };
  struct StatesTable {
    Field oldstate, newstate, family, delta_us;
    std::optional<Field> dport;
  };
  struct ConnlatTable {
    Field outcome, family, latency_us;
    std::optional<Field> dport;
  };
  struct TableBinding {
    enum class Kind { none, states, connlat } kind = Kind::none;
    StatesTable states;
    ConnlatTable connlat;
  };

  static constexpr size_t kStates = 16;    // tcp_states.h values fit in 4 bits
  static constexpr size_t kFamilies = 3;   // ipv4, ipv6, other
  static constexpr size_t kOutcomes = 16;  // enum values beyond the names fold into "unknown"

  void observe_states(const StatesTable& table, const unsigned char* data);
  void observe_connlat(const ConnlatTable& table, const unsigned char* data);
  size_t dport_slot(const std::optional<Field>& dport, const unsigned char* data);
  std::string outcome_name(size_t index) const;
  size_t outcome_index(uint64_t outcome) const;
  void create_states_families();
  void create_connlat_families();
  // Children by index, created on first use. `labelled_dport`: the table
  // has a dport field and the label is on.
  prometheus::Counter& transition_counter(size_t old_state, size_t new_state, size_t family, size_t slot,
                                          bool labelled_dport);
  prometheus::Histogram& duration_histogram(size_t state);
  prometheus::Counter& connect_counter(size_t outcome, size_t slot, bool labelled_dport);
  prometheus::Histogram& latency_histogram(size_t outcome, size_t family, size_t slot, bool labelled_dport);

  MetricsConfig config_;
  std::shared_ptr<prometheus::Registry> registry_;
  PortLabelFolder dports_;
  size_t dport_slots_;  // 1 without the dport label

  // Health.
  prometheus::Counter* events_ = nullptr;
  prometheus::Counter* lost_buffer_ = nullptr;
  prometheus::Counter* lost_skipped_ = nullptr;
  prometheus::Counter* lost_truncated_ = nullptr;
  prometheus::Gauge* probes_attached_ = nullptr;
  prometheus::Family<prometheus::Gauge>* program_info_ = nullptr;
  prometheus::Gauge* program_info_child_ = nullptr;

  // states
  prometheus::Family<prometheus::Counter>* transitions_ = nullptr;
  prometheus::Family<prometheus::Histogram>* state_durations_ = nullptr;
  std::vector<prometheus::Counter*> transition_children_;  // [old][new][family][dport slot]
  std::array<prometheus::Histogram*, kStates> duration_children_{};

  // connlat
  prometheus::Family<prometheus::Counter>* connects_ = nullptr;
  prometheus::Family<prometheus::Histogram>* connect_latency_ = nullptr;
  std::vector<prometheus::Counter*> connect_children_;  // [outcome][dport slot]
  std::vector<prometheus::Histogram*> latency_children_;  // [outcome][family][dport slot]
  std::vector<std::string> outcome_names_;

  std::vector<TableBinding> tables_;
};

// Label value of a family field holding 4/6 or AF_INET/AF_INET6.
std::string_view family_label(uint64_t family);

}  // namespace tcptrace
