// The program's own aggregation tables, read by the host: BCC's idioms
// (a BPF_HISTOGRAM filled with bpf_log2l(), counts in a BPF_HASH or
// BPF_ARRAY, their per-CPU forms) printed as JSON or text lines and exported
// as Prometheus series, as bcc's tools print them at each interval.
//
// Which maps: those a `tcptrace:tables` line lists (program_annotations.h),
// or without one every histogram and every hash or array whose values are
// integers, except the host's own maps (names starting tcptrace_, the
// tcptrace:seed maps). Output buffers are not tables. A map whose value is a
// struct is left alone unless listed, which is an error.
//
// Shapes:
//   histogram  declared BPF_HISTOGRAM(NAME) (an int-keyed array of u64: the
//              index is the log2 slot) or BPF_HISTOGRAM(NAME, struct key)
//              (a hash keyed by a struct with an integer member `slot`; the
//              other members group the slots into one histogram each).
//              Slot i >= 1 counts the values bpf_log2l() maps to it:
//              [2^(i-1), 2^i - 1], and slot 1 also 0 (bpf_log2l(0) is 1),
//              as bcc's print_log2_hist shows it; slot 0 counts only 0.
//   counts     any other listed or integer-valued hash or array: one value
//              per key, keys decoded like event fields (format hints apply;
//              a scalar key is the field `key`).
//
// Everything here builds and is unit-tested without root or libbcc: map
// reads come in as bcc::MapSnapshot values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bcc_backend.h"
#include "event_decoder.h"
#include "format_hints.h"
#include "metric_declarations.h"
#include "program_annotations.h"
#include "result.h"
#include "wall_clock.h"

namespace prometheus {
class Registry;
}

namespace tcptrace {

enum class TableShape { counts, histogram };

// A map the host reads, chosen and checked from BCC's description of it.
struct TableSpec {
  std::string name;
  bcc::DataMapKind kind = bcc::DataMapKind::hash;
  TableShape shape = TableShape::counts;
  TableUnit unit = TableUnit::none;
  bool listed = false;  // named in tcptrace:tables: its counts may be cleared
  size_t key_size = 0;
  size_t value_size = 0;
  size_t max_entries = 0;
  bool value_signed = false;
  // The key, decodable by EventDecoder: a scalar key is one field `key`;
  // a keyed histogram's struct without its `slot` member (size unchanged).
  EventLayout key_layout;
  bool key_is_struct = false;
  std::optional<FieldLayout> slot;  // keyed histogram: the slot member
  std::string map_type_text;        // "BPF_HISTOGRAM", "BPF_HASH", ... for help texts
};

// The tables to read, from every non-output map BCC reported, in their order.
// Errors (a listed map that is missing or holds no integers) name the
// annotation; the caller prefixes the program's path.
Result<std::vector<TableSpec>> select_tables(const std::vector<bcc::DataTable>& maps,
                                             const ProgramAnnotations& annotations);

// Whether the host clears a table after each read: histograms and listed
// maps, unless --accumulate.
bool clears_after_read(const TableSpec& spec, bool accumulate);

// One read of a table, summed over CPUs and decoded.
struct TableCounts {
  struct Entry {
    std::string key;  // JSON text of the decoded key
    uint64_t value = 0;  // two's complement when the value type is signed
    std::string raw_key;  // the key's bytes
  };
  struct Histogram {
    std::string key;  // JSON object of the key without `slot`; "" unkeyed
    std::vector<uint64_t> slots;  // index = log2 slot
    std::string raw_key;  // the bytes of one of its keys (its members but `slot` are the same in all)
  };
  std::vector<Entry> entries;          // counts: arrays by index (zeros left out), hashes by value, largest first
  std::vector<Histogram> histograms;   // histogram: one, or one per key (sorted by key)
};

// Bounds of log2 slot `slot` as bcc prints them: [0,0] for 0, [0,1] for 1,
// [2^(i-1), 2^i - 1] above.
uint64_t log2_slot_low(size_t slot);
uint64_t log2_slot_high(size_t slot);

// bcc's print_log2_hist (bcc/table.py, _print_log2_hist) for one set of
// slots, byte for byte: a header naming `value_type` ("usecs"), then one
// line per slot from 1 to the highest non-empty one, with a bar of stars 40
// wide (20 when slots above 32 are used). Nothing when every slot above 0 is
// empty.
std::string log2_histogram_text(const std::vector<uint64_t>& slots, const std::string& value_type);

// What a histogram's text header calls its values: "nsecs", "usecs",
// "msecs", "secs", "bytes" or "value".
std::string value_type_name(TableUnit unit);

class TableMetrics;

// A metric the program declares on one of its tables (tcptrace:metric ...
// map=MAP, metric_declarations.h), bound to the members of the table's key.
struct TableMetricBinding {
  MetricDeclaration declaration;
  struct Label {
    MetricLabel label;
    FieldLayout member;  // in the key; a scalar key's is `key`
  };
  std::vector<Label> labels;  // the labels in use: all but opt-in ones not asked for
};

// One table: decodes reads and writes them as a JSON line or as text.
class TableView {
 public:
  static Result<TableView> make(TableSpec spec, const std::vector<FormatHint>& hints, const WallClock& clock);

  const TableSpec& spec() const { return spec_; }
  // The declared metric read from this table, if any: it replaces the
  // table's own tcptrace_table_* series.
  const TableMetricBinding* metric() const { return metric_.get(); }
  void set_metric(std::shared_ptr<const TableMetricBinding> metric) { metric_ = std::move(metric); }
  TableCounts summarize(const bcc::MapSnapshot& snapshot) const;

  // {"event":NAME,"time":...,"ts_us":...,"unit":...,"buckets"|"histograms"|"entries":[...]}\n
  // `time_text` is the quoted RFC 3339 time, `ts_us` CLOCK_MONOTONIC µs.
  void append_json(std::string& out, const TableCounts& counts, const std::string& time_text, uint64_t ts_us) const;
  // "NAME:" then the histogram(s) as bcc prints them, or the entries in
  // aligned columns; a blank line after.
  void append_text(std::string& out, const TableCounts& counts) const;

 private:
  explicit TableView(TableSpec spec) : spec_(std::move(spec)) {}
  std::string decode_key(const unsigned char* key) const;

  TableSpec spec_;
  std::optional<EventDecoder> key_decoder_;  // none for an unkeyed histogram
  std::shared_ptr<const TableMetricBinding> metric_;
};

// Binds each map= metric to the table it names, among `views` (the tables
// the host reads; `maps`: every map the program has). `opt_in_labels`: the
// --metrics-label names asked for; an opt-in label not asked for is not
// bound (its member may be missing, as when a macro leaves it out of the
// key). Each mistake is one "PATH:LINE: metric NAME: ..." line (joined by
// '\n'): a map the program lacks or the host does not read, a histogram
// declared on counts or the reverse, a label whose member the key lacks.
Status bind_table_metrics(const std::vector<MetricDeclaration>& map_metrics, const std::vector<std::string>& maps,
                          std::vector<TableView>& views, const std::vector<std::string>& opt_in_labels,
                          const std::string& path);

// Prometheus series of the tables, kept across --watch versions (the
// running totals must not restart). Histograms become Prometheus histograms
// with power-of-two bounds (2^i - 1 in the table's unit; seconds for time
// units); counts become counters of the running total when the host clears
// the map after each read, gauges of the map's value otherwise. Labels are
// the decoded key's fields (`key` for a scalar key); past kTableLabelLimit
// distinct keys per table, the rest share one series whose labels are all
// "other". A table with a declared metric (TableView::metric()) is exported
// as that metric instead: its name, help and labels, the other key members
// summed over; an opt-in label without a closed set keeps `label_limit`
// values (--metrics-label-limit) and folds the rest into "other".
inline constexpr size_t kTableLabelLimit = 100;

class TableMetrics {
 public:
  explicit TableMetrics(std::shared_ptr<prometheus::Registry> registry, size_t label_limit = 10);
  ~TableMetrics();
  TableMetrics(const TableMetrics&) = delete;
  TableMetrics& operator=(const TableMetrics&) = delete;

  // Adds what a read found. `cleared`: this read also cleared the map, so
  // the next one counts from 0. `counter`: the table's counts export as a
  // counter of the running total (the host clears the map at each printed
  // read), else as a gauge of the value.
  void update(const TableView& view, const TableCounts& counts, bool cleared, bool counter,
              const std::string& program_path);

 private:
  struct State;
  void update_declared(const TableView& view, const TableCounts& counts, bool cleared, State& state);
  std::shared_ptr<prometheus::Registry> registry_;
  size_t label_limit_;
  std::map<std::string, std::unique_ptr<State>> tables_;
};

// Reads a table's map; `clear` asks for what was read to be taken out.
using TableMapReader = std::function<Result<bcc::MapSnapshot>(size_t table, bool clear)>;

enum class TableTextMode { json, text, none };

// A loaded program's tables over a run: read at every --interval tick and
// once at the end (finish()), printed into `out` and fed to the metrics.
// With --metrics and no --interval, the tables are read every second for
// the metrics alone, without printing or clearing.
class TableOutput {
 public:
  struct Config {
    std::optional<double> interval_seconds;  // --interval
    bool accumulate = false;                 // --accumulate
    TableTextMode mode = TableTextMode::json;
    std::string program_path;
  };
  TableOutput(std::vector<TableView> views, TableMapReader reader, Config config, std::string& out,
              TableMetrics* metrics, const WallClock& clock, double now_seconds);

  bool empty() const { return views_.empty(); }
  // Call often (every poll); reads when a tick is due.
  void tick(double now_seconds);
  // The last read: prints every table a last time.
  void finish();
  // The first error a read met (reported once by the caller), or "".
  std::string take_error();

 private:
  void read_all(bool print);

  std::vector<TableView> views_;
  TableMapReader reader_;
  Config config_;
  std::string& out_;
  TableMetrics* metrics_;
  const WallClock& clock_;
  double next_print_ = 0;
  double next_metrics_ = 0;
  bool finished_ = false;
  std::string error_;
};

// Chooses tables and builds their views in one step (program_loader.cpp).
Result<std::vector<TableView>> make_table_views(const std::vector<TableSpec>& specs,
                                                const std::vector<FormatHint>& hints, const WallClock& clock);

}  // namespace tcptrace
