#include "table_reader.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "json_writer.h"

namespace tcptrace {
namespace {

// Slots a log2 histogram can use: bpf_log2l() of a u64 is at most 64.
constexpr size_t kMaxLog2Slots = 65;

std::string map_type_text(bcc::DataMapKind kind, bool histogram) {
  if (histogram) return "BPF_HISTOGRAM";
  switch (kind) {
    case bcc::DataMapKind::hash: return "BPF_HASH";
    case bcc::DataMapKind::array: return "BPF_ARRAY";
    case bcc::DataMapKind::percpu_hash: return "BPF_PERCPU_HASH";
    case bcc::DataMapKind::percpu_array: return "BPF_PERCPU_ARRAY";
    case bcc::DataMapKind::other: break;
  }
  return "map";
}

bool is_integer_field(const FieldLayout& field) {
  return !field.is_array && (field.kind == ScalarKind::unsigned_int || field.kind == ScalarKind::signed_int ||
                             (field.kind == ScalarKind::character && field.element_size == 1));
}

// BCC describes a scalar type as a JSON string ("\"unsigned long long\"")
// and a struct as an array; a scalar becomes one field named `name`.
Result<FieldLayout> scalar_from_description(const std::string& description, const std::string& name) {
  nlohmann::json type = nlohmann::json::parse(description, nullptr, false);
  if (!type.is_string()) return runtime_error("not a scalar type");
  return parse_field_description(name + "#" + type.get<std::string>());
}

bool is_struct_description(const std::string& description) {
  nlohmann::json type = nlohmann::json::parse(description, nullptr, false);
  return type.is_array();
}

uint64_t read_integer(const unsigned char* p, size_t size, bool is_signed) {
  switch (size) {
    case 1: return is_signed ? static_cast<uint64_t>(static_cast<int64_t>(static_cast<int8_t>(p[0]))) : p[0];
    case 2: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return is_signed ? static_cast<uint64_t>(static_cast<int64_t>(static_cast<int16_t>(v))) : v;
    }
    case 4: {
      uint32_t v;
      std::memcpy(&v, p, 4);
      return is_signed ? static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(v))) : v;
    }
    default: {
      uint64_t v;
      std::memcpy(&v, p, 8);
      return v;
    }
  }
}

void append_value(std::string& out, uint64_t value, bool is_signed) {
  if (is_signed) {
    json::append_int_exact(out, static_cast<int64_t>(value));
  } else {
    json::append_uint_exact(out, value);
  }
}

std::string value_text(uint64_t value, bool is_signed) {
  return is_signed ? std::to_string(static_cast<int64_t>(value)) : std::to_string(value);
}

// A JSON value as a person reads it: strings without quotes.
std::string plain_text(const nlohmann::ordered_json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

uint64_t monotonic_us() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

std::string pad_right(const std::string& text, size_t width) {
  return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}
std::string pad_left(const std::string& text, size_t width) {
  return text.size() >= width ? text : std::string(width - text.size(), ' ') + text;
}

std::string upper(std::string text) {
  for (char& c : text) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  return text;
}

}  // namespace

Result<std::vector<TableSpec>> select_tables(const std::vector<bcc::DataTable>& maps,
                                             const ProgramAnnotations& annotations) {
  std::vector<TableSpec> specs;
  for (const bcc::DataTable& map : maps) {
    // The host's own maps: layout probes, loss counters, in-kernel metrics.
    if (map.name.rfind("tcptrace_", 0) == 0) continue;
    const TableDeclaration* listed = annotations.listed_table(map.name);
    const bool seeded = std::any_of(annotations.seeds.begin(), annotations.seeds.end(),
                                    [&](const SeedDeclaration& seed) { return seed.map == map.name; });
    const std::string line = "tcptrace:tables " + map.name + ": ";
    if (seeded) {
      if (listed) return runtime_error(line + "the host fills this map (tcptrace:seed); it is not a table to read");
      continue;
    }
    if (annotations.tables_listed && !listed) continue;
    // A map found by itself that does not fit is not a table; a listed one
    // is a mistake worth saying.
    std::optional<Error> rejected;
    auto reject = [&](const std::string& why) { rejected = runtime_error(line + why); };

    TableSpec spec;
    spec.name = map.name;
    spec.kind = bcc::data_map_kind(map.map_type);
    spec.listed = listed != nullptr;
    spec.unit = listed ? listed->unit : TableUnit::none;
    spec.key_size = map.key_size;
    spec.value_size = map.value_size;
    spec.max_entries = map.max_entries;
    const bool histogram = annotations.is_histogram(map.name);
    spec.shape = histogram ? TableShape::histogram : TableShape::counts;
    spec.map_type_text = map_type_text(spec.kind, histogram);
    const bool array = spec.kind == bcc::DataMapKind::array || spec.kind == bcc::DataMapKind::percpu_array;

    auto value = scalar_from_description(map.value_description, "value");
    if (spec.kind == bcc::DataMapKind::other) {
      reject("it is a map of type " + std::to_string(map.map_type) +
             "; only hashes and arrays (and their per-CPU and LRU forms) hold counts");
    } else if (!value || !is_integer_field(*value)) {
      reject("its values are not integers (BCC describes them as " + map.value_description + ")");
    } else if (spec.unit != TableUnit::none && !histogram) {
      reject("a unit applies to a histogram (BPF_HISTOGRAM) only");
    } else if (histogram) {
      if (value->kind != ScalarKind::unsigned_int || value->element_size != 8) {
        reject("a histogram's values must be u64");
      } else if (array) {
        // BPF_HISTOGRAM(name): the array index is the slot.
        spec.key_layout.size = map.key_size;
      } else {
        // BPF_HISTOGRAM(name, struct key): a `slot` member and the rest.
        auto key = layout_from_bcc_type_description(map.key_description);
        const FieldLayout* slot = key ? key->find("slot") : nullptr;
        if (!key || slot == nullptr || !is_integer_field(*slot)) {
          reject("a histogram keyed by a struct needs an integer member 'slot' in its key (BCC describes it as " +
                 map.key_description + ")");
        } else {
          spec.slot = *slot;
          EventLayout rest = std::move(key).value();
          rest.fields.erase(std::remove_if(rest.fields.begin(), rest.fields.end(),
                                           [](const FieldLayout& f) { return f.name == "slot"; }),
                            rest.fields.end());
          spec.key_layout = std::move(rest);
          spec.key_is_struct = true;
        }
      }
    } else if (is_struct_description(map.key_description)) {
      auto key = layout_from_bcc_type_description(map.key_description);
      if (!key) {
        reject("its key cannot be decoded: " + key.error().message);
      } else {
        spec.key_layout = std::move(key).value();
        spec.key_is_struct = true;
      }
    } else {
      auto key = scalar_from_description(map.key_description, "key");
      if (!key || key->is_array) {
        reject("its key cannot be decoded (BCC describes it as " + map.key_description + ")");
      } else {
        key->offset = 0;
        spec.key_layout.size = key->size();
        spec.key_layout.alignment = key->alignment;
        spec.key_layout.fields.push_back(std::move(key).value());
      }
    }
    if (rejected) {
      if (listed) return std::move(*rejected);
      continue;
    }
    spec.value_signed = value->kind == ScalarKind::signed_int ||
                        (value->kind == ScalarKind::character && value->type.find("unsigned") == std::string::npos);
    specs.push_back(std::move(spec));
  }
  for (const TableDeclaration& table : annotations.tables) {
    if (table.optional) continue;  // the program may leave it out
    const bool found = std::any_of(maps.begin(), maps.end(), [&](const bcc::DataTable& m) { return m.name == table.map; });
    if (!found) return runtime_error("tcptrace:tables " + table.map + ": the program declares no such map");
  }
  return specs;
}

bool clears_after_read(const TableSpec& spec, bool accumulate) {
  return !accumulate && (spec.shape == TableShape::histogram || spec.listed);
}

uint64_t log2_slot_low(size_t slot) {
  if (slot <= 1) return 0;
  return uint64_t{1} << (slot - 1);
}

uint64_t log2_slot_high(size_t slot) {
  if (slot == 0) return 0;
  if (slot >= 64) return std::numeric_limits<uint64_t>::max();
  return (uint64_t{1} << slot) - 1;
}

std::string value_type_name(TableUnit unit) {
  switch (unit) {
    case TableUnit::ns: return "nsecs";
    case TableUnit::us: return "usecs";
    case TableUnit::ms: return "msecs";
    case TableUnit::s: return "secs";
    case TableUnit::bytes: return "bytes";
    case TableUnit::none: break;
  }
  return "value";
}

std::string log2_histogram_text(const std::vector<uint64_t>& slots, const std::string& value_type) {
  long idx_max = -1;
  uint64_t val_max = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] > 0) idx_max = static_cast<long>(i);
    val_max = std::max(val_max, slots[i]);
  }
  const bool narrow = idx_max <= 32;
  const int stars = narrow ? 40 : 20;
  std::string text;
  char line[256];
  if (idx_max > 0) {
    std::snprintf(line, sizeof line, narrow ? "     %-19s : count     distribution\n"
                                            : "               %-29s : count     distribution\n",
                  value_type.c_str());
    text += line;
  }
  for (long i = 1; i <= idx_max; ++i) {
    const uint64_t low = log2_slot_low(static_cast<size_t>(i));
    const uint64_t high = log2_slot_high(static_cast<size_t>(i));
    const uint64_t val = slots[static_cast<size_t>(i)];
    // bcc's _stars: as many as width * val / val_max, at most width.
    const auto count = static_cast<int>(
        std::min<unsigned __int128>(static_cast<unsigned __int128>(stars) * val / val_max, stars));
    const std::string bar(static_cast<size_t>(count), '*');
    std::snprintf(line, sizeof line, narrow ? "%10llu -> %-10llu : %-8llu |%-*s|\n" : "%20llu -> %-20llu : %-8llu |%-*s|\n",
                  static_cast<unsigned long long>(low), static_cast<unsigned long long>(high),
                  static_cast<unsigned long long>(val), stars, bar.c_str());
    text += line;
  }
  return text;
}

Result<TableView> TableView::make(TableSpec spec, const std::vector<FormatHint>& hints, const WallClock& clock) {
  TableView view(std::move(spec));
  if (!view.spec_.key_layout.fields.empty()) {
    DecoderOptions options;
    options.add_time = false;
    auto decoder = EventDecoder::make(view.spec_.key_layout, hints, view.spec_.name, options, clock);
    if (!decoder) return runtime_error("table '" + view.spec_.name + "': " + decoder.error().message);
    view.key_decoder_.emplace(std::move(decoder).value());
  }
  return view;
}

std::string TableView::decode_key(const unsigned char* key) const {
  if (!key_decoder_) return "";
  std::string text;
  key_decoder_->append_json(text, key, spec_.key_size);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  // A scalar key is the only field of {"key":VALUE}.
  if (!spec_.key_is_struct && text.size() >= 8) return text.substr(7, text.size() - 8);
  return text;
}

TableCounts TableView::summarize(const bcc::MapSnapshot& snapshot) const {
  TableCounts counts;
  const size_t per_cpu = snapshot.cpus > 1 ? (spec_.value_size + 7) / 8 * 8 : spec_.value_size;
  const bool array = spec_.kind == bcc::DataMapKind::array || spec_.kind == bcc::DataMapKind::percpu_array;
  std::map<std::string, std::vector<uint64_t>> groups;
  std::map<std::string, std::string> raw_keys;  // group -> the bytes of its first key
  for (size_t i = 0; i < snapshot.entries; ++i) {
    const unsigned char* key = snapshot.keys.data() + i * snapshot.key_size;
    const unsigned char* values = snapshot.values.data() + i * snapshot.value_stride;
    uint64_t sum = 0;
    for (size_t cpu = 0; cpu < snapshot.cpus; ++cpu) {
      sum += read_integer(values + cpu * per_cpu, spec_.value_size, spec_.value_signed);
    }
    if (spec_.shape == TableShape::histogram) {
      uint64_t slot;
      std::string group;
      if (spec_.slot) {
        slot = read_integer(key + spec_.slot->offset, spec_.slot->element_size, false);
        group = decode_key(key);
      } else {
        slot = read_integer(key, std::min<size_t>(snapshot.key_size, 4), false);
      }
      if (slot >= kMaxLog2Slots) continue;  // not a log2 slot: bpf_log2l() never gives it
      std::vector<uint64_t>& slots = groups[group];
      if (slots.size() <= slot) slots.resize(slot + 1, 0);
      slots[slot] += sum;
      raw_keys.emplace(group, std::string(reinterpret_cast<const char*>(key), snapshot.key_size));
      continue;
    }
    if (array && sum == 0) continue;
    counts.entries.push_back({decode_key(key), sum, std::string(reinterpret_cast<const char*>(key), snapshot.key_size)});
  }
  if (spec_.shape == TableShape::histogram) {
    if (groups.empty() && !spec_.slot) groups[""];  // an unkeyed histogram always prints
    for (auto& [key, slots] : groups) counts.histograms.push_back({key, std::move(slots), raw_keys[key]});
  } else if (!array) {
    const bool is_signed = spec_.value_signed;
    std::stable_sort(counts.entries.begin(), counts.entries.end(),
                     [is_signed](const TableCounts::Entry& a, const TableCounts::Entry& b) {
                       if (a.value != b.value) {
                         return is_signed ? static_cast<int64_t>(a.value) > static_cast<int64_t>(b.value)
                                          : a.value > b.value;
                       }
                       return a.key < b.key;
                     });
  }
  return counts;
}

namespace {

void append_buckets(std::string& out, const std::vector<uint64_t>& slots) {
  out += "[";
  size_t first = slots.size(), last = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] == 0) continue;
    first = std::min(first, i);
    last = i;
  }
  for (size_t i = first; i < slots.size() && i <= last; ++i) {
    if (i != first) out += ",";
    out += "{\"low\":";
    json::append_uint_exact(out, log2_slot_low(i));
    out += ",\"high\":";
    json::append_uint_exact(out, log2_slot_high(i));
    out += ",\"count\":";
    json::append_uint_exact(out, slots[i]);
    out += "}";
  }
  out += "]";
}

}  // namespace

void TableView::append_json(std::string& out, const TableCounts& counts, const std::string& time_text,
                            uint64_t ts_us) const {
  out += "{\"event\":";
  json::append_string(out, spec_.name);
  out += ",\"time\":" + time_text + ",\"ts_us\":";
  json::append_uint(out, ts_us);
  if (spec_.shape == TableShape::histogram) {
    if (spec_.unit != TableUnit::none) {
      out += ",\"unit\":";
      json::append_string(out, table_unit_name(spec_.unit));
    }
    if (!spec_.slot) {
      out += ",\"buckets\":";
      append_buckets(out, counts.histograms.empty() ? std::vector<uint64_t>{} : counts.histograms.front().slots);
    } else {
      out += ",\"histograms\":[";
      for (size_t i = 0; i < counts.histograms.size(); ++i) {
        if (i > 0) out += ",";
        out += "{\"key\":" + counts.histograms[i].key + ",\"buckets\":";
        append_buckets(out, counts.histograms[i].slots);
        out += "}";
      }
      out += "]";
    }
  } else {
    out += ",\"entries\":[";
    for (size_t i = 0; i < counts.entries.size(); ++i) {
      if (i > 0) out += ",";
      out += "{\"key\":" + counts.entries[i].key + ",\"value\":";
      append_value(out, counts.entries[i].value, spec_.value_signed);
      out += "}";
    }
    out += "]";
  }
  out += "}\n";
}

void TableView::append_text(std::string& out, const TableCounts& counts) const {
  out += spec_.name + ":\n";
  if (spec_.shape == TableShape::histogram) {
    const std::string value_type = value_type_name(spec_.unit);
    for (const TableCounts::Histogram& histogram : counts.histograms) {
      if (spec_.slot) {
        // As bcc prints a histogram per secondary key: "\nsection = value".
        const auto key = nlohmann::ordered_json::parse(histogram.key, nullptr, false);
        std::string title;
        if (key.is_object()) {
          for (const auto& [name, value] : key.items()) {
            title += (title.empty() ? "" : ", ") + name + " = " + plain_text(value);
          }
        }
        out += "\n" + title + "\n";
      }
      out += log2_histogram_text(histogram.slots, value_type);
    }
  } else {
    // Key columns, then VALUE; widths from the longest cell.
    std::vector<std::string> headers;
    std::vector<std::vector<std::string>> rows;
    for (const TableCounts::Entry& entry : counts.entries) {
      std::vector<std::string> row;
      const auto key = nlohmann::ordered_json::parse(entry.key, nullptr, false);
      if (spec_.key_is_struct && key.is_object()) {
        for (const auto& [name, value] : key.items()) {
          if (rows.empty()) headers.push_back(upper(name));
          row.push_back(plain_text(value));
        }
      } else {
        if (rows.empty()) headers.push_back("KEY");
        row.push_back(key.is_discarded() ? entry.key : plain_text(key));
      }
      row.push_back(value_text(entry.value, spec_.value_signed));
      rows.push_back(std::move(row));
    }
    if (rows.empty()) {
      out += "(empty)\n";
    } else {
      headers.push_back("VALUE");
      std::vector<size_t> widths(headers.size(), 0);
      for (size_t c = 0; c < headers.size(); ++c) widths[c] = headers[c].size();
      for (const auto& row : rows) {
        for (size_t c = 0; c < row.size() && c < widths.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
      }
      auto append_row = [&](const std::vector<std::string>& cells) {
        std::string line;
        for (size_t c = 0; c < cells.size() && c < widths.size(); ++c) {
          const bool last = c + 1 == widths.size();
          line += last ? pad_left(cells[c], widths[c]) : pad_right(cells[c], widths[c]) + " ";
        }
        out += line + "\n";
      };
      append_row(headers);
      for (const auto& row : rows) append_row(row);
    }
  }
  out += "\n";
}

Result<std::vector<TableView>> make_table_views(const std::vector<TableSpec>& specs,
                                                const std::vector<FormatHint>& hints, const WallClock& clock) {
  std::vector<TableView> views;
  for (const TableSpec& spec : specs) {
    auto view = TableView::make(spec, hints, clock);
    if (!view) return std::move(view).take_error();
    views.push_back(std::move(view).value());
  }
  return views;
}

Status bind_table_metrics(const std::vector<MetricDeclaration>& map_metrics, const std::vector<std::string>& maps,
                          std::vector<TableView>& views, const std::vector<std::string>& opt_in_labels,
                          const std::string& path) {
  std::vector<std::string> mistakes;
  std::vector<std::string> bound_maps;
  for (const MetricDeclaration& d : map_metrics) {
    const auto mistake = [&](const std::string& text) {
      mistakes.push_back(path + ":" + std::to_string(d.line) + ": metric " + d.name + ": " + text);
    };
    auto view = std::find_if(views.begin(), views.end(), [&](const TableView& v) { return v.spec().name == d.map; });
    if (view == views.end()) {
      if (std::find(maps.begin(), maps.end(), d.map) == maps.end()) {
        mistake("map=" + d.map + ": the program declares no such map");
      } else {
        mistake("map=" + d.map + ": the host does not read this map (list it in the tcptrace:tables line; only "
                "histograms and maps of integer counts are read)");
      }
      continue;
    }
    const TableSpec& spec = view->spec();
    if (d.kind == MetricKind::histogram && spec.shape != TableShape::histogram) {
      mistake("map=" + d.map + ": a histogram is read from a log2 histogram (BPF_HISTOGRAM); this map holds counts "
              "(declare a counter)");
      continue;
    }
    if (d.kind == MetricKind::counter && spec.shape == TableShape::histogram) {
      mistake("map=" + d.map + ": this map is a log2 histogram (BPF_HISTOGRAM); declare a histogram");
      continue;
    }
    if (std::find(bound_maps.begin(), bound_maps.end(), d.map) != bound_maps.end()) {
      mistake("map=" + d.map + ": another metric is read from this map already");
      continue;
    }
    auto binding = std::make_shared<TableMetricBinding>();
    binding->declaration = d;
    bool bad = false;
    for (const MetricLabel& label : d.labels) {
      const bool asked = std::find(opt_in_labels.begin(), opt_in_labels.end(), label.name) != opt_in_labels.end();
      if (label.opt_in && !asked) continue;
      const FieldLayout* member = spec.key_layout.find(label.field);
      if (member == nullptr) {
        std::string members;
        for (const FieldLayout& f : spec.key_layout.fields) members += (members.empty() ? "" : ", ") + f.name;
        mistake(std::string(label.opt_in ? "--metrics-label " + label.name + ": " : "") + "the key of map '" +
                d.map + "' has no member '" + label.field + "' (" +
                (members.empty() ? std::string("it has none") : "it has " + members) + ")");
        bad = true;
        continue;
      }
      if (label.domain != LabelDomain::folded && !is_integer_field(*member)) {
        mistake("label " + label.name + ": key member '" + label.field + "' of map '" + d.map +
                "' is not an integer (only an opt-in label, folded by the host, may take other values)");
        bad = true;
        continue;
      }
      binding->labels.push_back({label, *member});
    }
    if (bad) continue;
    bound_maps.push_back(d.map);
    view->set_metric(std::move(binding));
  }
  if (mistakes.empty()) return {};
  std::string text;
  for (const std::string& m : mistakes) text += (text.empty() ? "" : "\n") + m;
  return runtime_error(text);
}

// ---- metrics ---------------------------------------------------------------

struct TableMetrics::State {
  TableShape shape = TableShape::counts;
  bool counter = false;
  std::string signature;  // a declared metric: what it was declared as; "" for the table's own series
  std::vector<std::vector<std::string>> kept_values;  // declared: per folded label, the values that keep theirs
  prometheus::Family<prometheus::Histogram>* histograms = nullptr;
  prometheus::Family<prometheus::Counter>* counters = nullptr;
  prometheus::Family<prometheus::Gauge>* gauges = nullptr;
  prometheus::Histogram::BucketBoundaries bounds;
  std::map<std::string, void*> series;          // key JSON -> its child (folded keys share "other")
  std::map<std::string, std::vector<uint64_t>> last_slots;
  std::map<std::string, uint64_t> last_values;
};

TableMetrics::TableMetrics(std::shared_ptr<prometheus::Registry> registry, size_t label_limit)
    : registry_(std::move(registry)), label_limit_(label_limit) {}
TableMetrics::~TableMetrics() = default;

namespace {

double unit_scale(TableUnit unit) {
  switch (unit) {
    case TableUnit::ns: return 1e-9;
    case TableUnit::us: return 1e-6;
    case TableUnit::ms: return 1e-3;
    default: return 1;
  }
}

std::string unit_suffix(TableUnit unit) {
  switch (unit) {
    case TableUnit::ns:
    case TableUnit::us:
    case TableUnit::ms:
    case TableUnit::s: return "_seconds";
    case TableUnit::bytes: return "_bytes";
    case TableUnit::none: break;
  }
  return "";
}

// Prometheus label names: [a-zA-Z_][a-zA-Z0-9_]*, none starting "__"; a
// histogram's "le" is taken.
std::string label_name(const std::string& field) {
  std::string name = field;
  if (name.rfind("__", 0) == 0 || name == "le") name = "key_" + name;
  return name;
}

prometheus::Labels labels_of(const std::string& key_json, bool is_struct, bool other) {
  prometheus::Labels labels;
  if (key_json.empty()) return labels;
  const auto key = nlohmann::ordered_json::parse(key_json, nullptr, false);
  if (is_struct && key.is_object()) {
    for (const auto& [name, value] : key.items()) labels[label_name(name)] = other ? "other" : plain_text(value);
  } else {
    labels["key"] = other ? "other" : key.is_discarded() ? key_json : plain_text(key);
  }
  return labels;
}

}  // namespace

namespace {

// What a declared table metric was declared as: a --watch version that
// declares it the same way keeps its series.
std::string declared_signature(const TableMetricBinding& b, const TableSpec& spec) {
  const MetricDeclaration& d = b.declaration;
  std::string text = (d.kind == MetricKind::counter ? "counter " : "histogram ") + d.name + "\n" + d.help + "\n" +
                     std::string(table_unit_name(spec.unit)) + "\n";
  for (const TableMetricBinding::Label& l : b.labels) {
    text += l.label.name + ":" + std::to_string(static_cast<int>(l.label.domain));
    for (const std::string& name : l.label.names) text += "," + name;
    text += "\n";
  }
  return text;
}

// A key member's value as JSON text decoded it; nullopt when it is null
// (an `optional` member that is all zeros) or missing.
std::optional<std::string> member_text(const std::string& key_json, bool is_struct, const std::string& member) {
  const auto key = nlohmann::ordered_json::parse(key_json, nullptr, false);
  if (key.is_discarded()) return std::nullopt;
  if (!is_struct) return key.is_null() ? std::nullopt : std::optional<std::string>(plain_text(key));
  if (!key.is_object() || !key.contains(member) || key.at(member).is_null()) return std::nullopt;
  return plain_text(key.at(member));
}

}  // namespace

void TableMetrics::update(const TableView& view, const TableCounts& counts, bool cleared, bool counter_kind,
                          const std::string& program_path) {
  const TableSpec& spec = view.spec();
  std::unique_ptr<State>& slot = tables_[spec.name];
  const bool counter = spec.shape == TableShape::counts && counter_kind;
  const std::string signature = view.metric() ? declared_signature(*view.metric(), spec) : "";
  // A --watch version may change a table's shape or its declared metric;
  // its series then start over, the old ones gone from the exposition.
  const bool same = slot && slot->shape == spec.shape && slot->signature == signature &&
                    (view.metric() != nullptr || slot->counter == counter);
  if (!same && slot) {
    if (slot->histograms != nullptr) registry_->Remove(*slot->histograms);
    if (slot->counters != nullptr) registry_->Remove(*slot->counters);
    if (slot->gauges != nullptr) registry_->Remove(*slot->gauges);
    slot.reset();
  }
  if (view.metric() != nullptr) {
    if (!slot) {
      slot = std::make_unique<State>();
      slot->shape = spec.shape;
      slot->signature = signature;
    }
    update_declared(view, counts, cleared, *slot);
    return;
  }
  if (!slot) {
    slot = std::make_unique<State>();
    slot->shape = spec.shape;
    slot->counter = counter;
    const std::string base = "tcptrace_table_" + spec.name;
    const std::string from = "from the map '" + spec.name + "' (" + spec.map_type_text + ") of " + program_path;
    if (spec.shape == TableShape::histogram) {
      const std::string unit = unit_suffix(spec.unit);
      slot->histograms = &prometheus::BuildHistogram()
                              .Name(base + unit)
                              .Help("Log2 histogram " + from + "; bucket i holds values up to 2^i - 1" +
                                    (unit.empty() ? "" : " " + std::string(table_unit_name(spec.unit)) +
                                                             ", exported in " + unit.substr(1)) +
                                    "; the sum of the values is unknown (NaN)")
                              .Register(*registry_);
      const size_t slots = spec.slot ? kMaxLog2Slots - 1 : std::min(spec.max_entries, kMaxLog2Slots - 1);
      for (size_t i = 0; i < slots; ++i) {
        slot->bounds.push_back(static_cast<double>(log2_slot_high(i)) * unit_scale(spec.unit));
      }
    } else if (counter) {
      slot->counters = &prometheus::BuildCounter()
                            .Name(base + "_total")
                            .Help("Running total of each key's count " + from +
                                  ", which the host clears after each read")
                            .Register(*registry_);
    } else {
      slot->gauges = &prometheus::BuildGauge()
                          .Name(base)
                          .Help("Each key's value " + from + " at the last read")
                          .Register(*registry_);
    }
  }
  State& state = *slot;
  auto series = [&](const std::string& key, auto make) -> void* {
    if (auto it = state.series.find(key); it != state.series.end()) return it->second;
    const bool other = state.series.size() >= kTableLabelLimit;
    const std::string id = other ? "\x01other" : key;
    if (auto it = state.series.find(id); it != state.series.end()) return it->second;
    void* child = make(labels_of(key, spec.key_is_struct, other));
    state.series[id] = child;
    return child;
  };
  // What grew since the last read: the difference from what it held then
  // (0 after a clear; a smaller value means the map restarted).
  auto grown = [&](uint64_t now, uint64_t& last) {
    const uint64_t delta = now >= last ? now - last : now;
    last = cleared ? 0 : now;
    return delta;
  };
  if (spec.shape == TableShape::histogram) {
    for (const TableCounts::Histogram& histogram : counts.histograms) {
      auto* child = static_cast<prometheus::Histogram*>(series(histogram.key, [&](const prometheus::Labels& labels) {
        return static_cast<void*>(&state.histograms->Add(labels, state.bounds));
      }));
      std::vector<uint64_t>& last = state.last_slots[histogram.key];
      last.resize(std::max(last.size(), histogram.slots.size()), 0);
      std::vector<double> increments(state.bounds.size() + 1, 0);
      bool any = false;
      for (size_t i = 0; i < histogram.slots.size(); ++i) {
        const uint64_t delta = grown(histogram.slots[i], last[i]);
        increments[std::min(i, state.bounds.size())] += static_cast<double>(delta);
        any |= delta != 0;
      }
      if (any) child->ObserveMultiple(increments, std::numeric_limits<double>::quiet_NaN());
    }
    return;
  }
  for (const TableCounts::Entry& entry : counts.entries) {
    if (state.counter) {
      auto* child = static_cast<prometheus::Counter*>(series(entry.key, [&](const prometheus::Labels& labels) {
        return static_cast<void*>(&state.counters->Add(labels));
      }));
      const uint64_t delta = grown(entry.value, state.last_values[entry.key]);
      // A counter only grows: a negative count (a signed map) adds nothing.
      if (!spec.value_signed || static_cast<int64_t>(delta) > 0) child->Increment(static_cast<double>(delta));
    } else {
      auto* child = static_cast<prometheus::Gauge*>(series(entry.key, [&](const prometheus::Labels& labels) {
        return static_cast<void*>(&state.gauges->Add(labels));
      }));
      child->Set(spec.value_signed ? static_cast<double>(static_cast<int64_t>(entry.value))
                                   : static_cast<double>(entry.value));
    }
  }
}

void TableMetrics::update_declared(const TableView& view, const TableCounts& counts, bool cleared, State& state) {
  const TableSpec& spec = view.spec();
  const TableMetricBinding& b = *view.metric();
  const MetricDeclaration& d = b.declaration;
  const size_t labels = b.labels.size();
  if (state.histograms == nullptr && state.counters == nullptr) {
    if (d.kind == MetricKind::histogram) {
      state.histograms = &prometheus::BuildHistogram().Name(d.name).Help(d.help).Register(*registry_);
      const size_t slots = spec.slot ? kMaxLog2Slots - 1 : std::min(spec.max_entries, kMaxLog2Slots - 1);
      for (size_t i = 0; i < slots; ++i) {
        state.bounds.push_back(static_cast<double>(log2_slot_high(i)) * unit_scale(spec.unit));
      }
    } else {
      state.counters = &prometheus::BuildCounter().Name(d.name).Help(d.help).Register(*registry_);
    }
    state.kept_values.assign(labels, {});
    // As for metrics counted from events (metrics.cpp): labels that all
    // have named values start with every named combination at zero.
    bool named_only = true;
    size_t combinations = 1;
    for (const TableMetricBinding::Label& l : b.labels) {
      named_only &= l.label.domain == LabelDomain::names || l.label.domain == LabelDomain::family;
      combinations *= label_slots(l.label, label_limit_) - 1;
    }
    if (named_only && combinations <= 64) {
      for (size_t n = 0; n < combinations; ++n) {
        prometheus::Labels set;
        std::string id;
        size_t rest = n;
        for (size_t j = labels; j-- > 0;) {
          const MetricLabel& label = b.labels[j].label;
          const size_t radix = label_slots(label, label_limit_) - 1;
          const std::string value = label_value(label, rest % radix);
          rest /= radix;
          set[label.name] = value;
          id = value + (j + 1 < labels ? "\x1f" : "") + id;
        }
        if (d.kind == MetricKind::histogram) {
          state.series[id] = &state.histograms->Add(set, state.bounds);
        } else {
          state.series[id] = &state.counters->Add(set);
        }
      }
    }
  }
  // The series of one key: its label values, the other members summed over.
  auto series_of = [&](const std::string& key_json, const std::string& raw_key) -> void* {
    prometheus::Labels set;
    std::string id;
    for (size_t j = 0; j < labels; ++j) {
      const TableMetricBinding::Label& l = b.labels[j];
      std::string value;
      if (l.label.domain == LabelDomain::folded) {
        // An address or a port: the first label_limit_ values keep theirs.
        const std::optional<std::string> text = member_text(key_json, spec.key_is_struct, l.member.name);
        std::vector<std::string>& kept = state.kept_values[j];
        if (!text) {
          value = "other";
        } else if (std::find(kept.begin(), kept.end(), *text) != kept.end()) {
          value = *text;
        } else if (kept.size() < label_limit_) {
          kept.push_back(*text);
          value = *text;
        } else {
          value = "other";
        }
      } else {
        uint64_t raw = 0;
        if (l.member.offset + l.member.element_size <= raw_key.size()) {
          const bool is_signed = l.member.kind == ScalarKind::signed_int;
          raw = read_integer(reinterpret_cast<const unsigned char*>(raw_key.data()) + l.member.offset,
                             l.member.element_size, is_signed);
        }
        value = label_value(l.label, label_slot(l.label, raw));
      }
      set[l.label.name] = value;
      id += (j > 0 ? "\x1f" : "") + value;
    }
    if (auto it = state.series.find(id); it != state.series.end()) return it->second;
    void* child = d.kind == MetricKind::histogram ? static_cast<void*>(&state.histograms->Add(set, state.bounds))
                                                  : static_cast<void*>(&state.counters->Add(set));
    state.series[id] = child;
    return child;
  };
  auto grown = [&](uint64_t now, uint64_t& last) {
    const uint64_t delta = now >= last ? now - last : now;
    last = cleared ? 0 : now;
    return delta;
  };
  if (d.kind == MetricKind::histogram) {
    std::map<void*, std::vector<double>> increments;
    for (const TableCounts::Histogram& histogram : counts.histograms) {
      void* child = series_of(histogram.key, histogram.raw_key);
      std::vector<double>& add = increments[child];
      add.resize(state.bounds.size() + 1, 0);
      std::vector<uint64_t>& last = state.last_slots[histogram.key];
      last.resize(std::max(last.size(), histogram.slots.size()), 0);
      for (size_t i = 0; i < histogram.slots.size(); ++i) {
        add[std::min(i, state.bounds.size())] += static_cast<double>(grown(histogram.slots[i], last[i]));
      }
    }
    for (auto& [child, add] : increments) {
      if (std::any_of(add.begin(), add.end(), [](double v) { return v != 0; })) {
        static_cast<prometheus::Histogram*>(child)->ObserveMultiple(add, std::numeric_limits<double>::quiet_NaN());
      }
    }
    return;
  }
  for (const TableCounts::Entry& entry : counts.entries) {
    auto* child = static_cast<prometheus::Counter*>(series_of(entry.key, entry.raw_key));
    const uint64_t delta = grown(entry.value, state.last_values[entry.key]);
    if (!spec.value_signed || static_cast<int64_t>(delta) > 0) child->Increment(static_cast<double>(delta));
  }
}

// ---- the run's reads ---------------------------------------------------------

TableOutput::TableOutput(std::vector<TableView> views, TableMapReader reader, Config config, std::string& out,
                         TableMetrics* metrics, const WallClock& clock, double now_seconds)
    : views_(std::move(views)),
      reader_(std::move(reader)),
      config_(std::move(config)),
      out_(out),
      metrics_(metrics),
      clock_(clock) {
  next_print_ = config_.interval_seconds ? now_seconds + *config_.interval_seconds : 0;
  next_metrics_ = now_seconds + 1;
}

void TableOutput::tick(double now_seconds) {
  if (views_.empty() || finished_) return;
  if (config_.interval_seconds && now_seconds >= next_print_) {
    // Ticks stay on the grid of the start, however late this call is.
    while (next_print_ <= now_seconds) next_print_ += *config_.interval_seconds;
    read_all(true);
    next_metrics_ = now_seconds + 1;
  } else if (metrics_ != nullptr && !config_.interval_seconds && now_seconds >= next_metrics_) {
    next_metrics_ = now_seconds + 1;
    read_all(false);
  }
}

void TableOutput::finish() {
  if (views_.empty() || finished_) return;
  read_all(true);
  finished_ = true;
}

std::string TableOutput::take_error() { return std::exchange(error_, std::string()); }

void TableOutput::read_all(bool print) {
  std::string time_text;
  clock_.append_rfc3339_now(time_text);
  const uint64_t ts_us = monotonic_us();
  for (size_t i = 0; i < views_.size(); ++i) {
    const TableView& view = views_[i];
    // Only a printed read clears: a read for the metrics alone leaves the
    // interval's counts to be printed.
    const bool clear = print && clears_after_read(view.spec(), config_.accumulate);
    auto snapshot = reader_(i, clear);
    if (!snapshot) {
      if (error_.empty()) error_ = "table '" + view.spec().name + "': " + snapshot.error().message;
      continue;
    }
    const TableCounts counts = view.summarize(*snapshot);
    if (metrics_ != nullptr) {
      metrics_->update(view, counts, clear, clears_after_read(view.spec(), config_.accumulate), config_.program_path);
    }
    if (!print) continue;
    if (config_.mode == TableTextMode::json) view.append_json(out_, counts, time_text, ts_us);
    if (config_.mode == TableTextMode::text) view.append_text(out_, counts);
  }
}

}  // namespace tcptrace
