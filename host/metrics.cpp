#include "metrics.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace tcptrace {
namespace {

uint64_t read_unsigned(const unsigned char* data, size_t offset, size_t size) {
  switch (size) {
    case 1:
      return data[offset];
    case 2: {
      uint16_t v;
      std::memcpy(&v, data + offset, sizeof v);
      return v;
    }
    case 4: {
      uint32_t v;
      std::memcpy(&v, data + offset, sizeof v);
      return v;
    }
    default: {
      uint64_t v;
      std::memcpy(&v, data + offset, sizeof v);
      return v;
    }
  }
}

}  // namespace

std::string MetricsAddress::listen_spec() const {
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string MetricsAddress::authority(uint16_t actual_port) const {
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(actual_port);
}

Result<MetricsAddress> parse_metrics_address(std::string_view text) {
  const std::string shown(text);
  const auto bad = [&](const std::string& why) {
    return usage_error("--metrics: '" + shown + "' " + why +
                       " (expected IP:PORT, e.g. 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464)");
  };
  MetricsAddress address;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return bad("has no closing ']'");
    address.host = std::string(text.substr(1, close - 1));
    address.ipv6 = true;
    if (close + 1 >= text.size() || text[close + 1] != ':') return bad("has no port");
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("has no port");
    address.host = std::string(text.substr(0, colon));
    if (address.host.find(':') != std::string::npos) return bad("needs brackets around an IPv6 address");
    port_text = text.substr(colon + 1);
  }
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(address.ipv6 ? AF_INET6 : AF_INET, address.host.c_str(), buf) != 1) {
    return bad("does not start with an IP address");
  }
  unsigned port = 0;
  const auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() || port > 65535) {
    return bad("has no valid port (0-65535)");
  }
  address.port = static_cast<uint16_t>(port);
  return address;
}

LabelFolder::LabelFolder(size_t limit) : limit_(limit), slot_of_small_(65536, 0) { values_.reserve(limit); }

size_t LabelFolder::slot(uint64_t value) {
  if (value < slot_of_small_.size()) {
    const uint16_t known = slot_of_small_[value];
    if (known != 0) return known - 1u;
  } else {
    const auto found = std::find(values_.begin(), values_.end(), value);
    if (found != values_.end()) return static_cast<size_t>(found - values_.begin());
  }
  if (values_.size() >= limit_) return limit_;
  values_.push_back(value);
  if (value < slot_of_small_.size()) slot_of_small_[value] = static_cast<uint16_t>(values_.size());
  return values_.size() - 1;
}

std::string LabelFolder::label(size_t slot) const {
  return slot < values_.size() ? std::to_string(values_[slot]) : "other";
}

namespace {

// A field's value as C converts it to u64: signed fields sign-extended.
uint64_t read_field(const unsigned char* data, const FieldRef& field) {
  const uint64_t raw = read_unsigned(data, field.offset, field.size);
  if (!field.is_signed || field.size == 8) return raw;
  const unsigned bits = static_cast<unsigned>(field.size * 8);
  const uint64_t sign = uint64_t{1} << (bits - 1);
  return (raw ^ sign) - sign;
}

Result<FieldRef> integer_field(const EventLayout& layout, const std::string& name) {
  const FieldLayout* f = layout.find(name);
  if (f == nullptr) return runtime_error("the event struct has no field '" + name + "'");
  const bool integer = f->kind == ScalarKind::unsigned_int || f->kind == ScalarKind::signed_int;
  if (f->is_array || !integer ||
      (f->element_size != 1 && f->element_size != 2 && f->element_size != 4 && f->element_size != 8)) {
    return runtime_error("field '" + name + "' (" + f->type + ") is not an integer of 1, 2, 4 or 8 bytes");
  }
  return FieldRef{f->offset, f->element_size, f->kind == ScalarKind::signed_int};
}

}  // namespace

Result<std::vector<BoundMetric>> bind_metric_fields(const std::vector<MetricDeclaration>& metrics,
                                                    const std::vector<std::string>& table_names,
                                                    const std::vector<const EventLayout*>& layouts,
                                                    const std::string& path) {
  std::vector<BoundMetric> bound;
  std::string mistakes;
  const auto mistake = [&](const MetricDeclaration& m, const std::string& text) {
    mistakes += (mistakes.empty() ? "" : "\n") + path + ":" + std::to_string(m.line) + ": metric " + m.name + ": " + text;
  };
  for (const MetricDeclaration& m : metrics) {
    BoundMetric b;
    b.declaration = m;
    // The table: the one named, or the only one whose events have fields.
    std::vector<size_t> candidates;
    for (size_t i = 0; i < table_names.size(); ++i) {
      if (layouts[i] != nullptr && (m.table.empty() || table_names[i] == m.table)) candidates.push_back(i);
    }
    if (candidates.size() != 1) {
      mistake(m, candidates.size() > 1 ? "the program has several output tables; say which with table="
                 : m.table.empty()     ? "the program sends no events to count"
                                       : "the program sends no events to a table '" + m.table + "'");
      continue;
    }
    b.table_index = candidates.front();
    const EventLayout& layout = *layouts[b.table_index];
    bool bad = false;
    const auto field = [&](const std::string& name) -> FieldRef {
      auto f = integer_field(layout, name);
      if (!f) {
        if (!bad) mistake(m, f.error().message);
        bad = true;
        return {};
      }
      return *f;
    };
    for (const MetricLabel& label : m.labels) b.labels.push_back(field(label.field));
    if (!m.value_field.empty()) b.value = field(m.value_field);
    for (const MetricCondition& c : m.conditions) {
      b.conditions.push_back(field(c.field));
      if (!bad && !b.conditions.back().is_signed && c.constant < 0) {
        mistake(m, "when=" + c.field + std::string(compare_op_text(c.op)) + std::to_string(c.constant) +
                       ": the field is unsigned");
        bad = true;
      }
    }
    if (!bad) bound.push_back(std::move(b));
  }
  if (!mistakes.empty()) return runtime_error(mistakes);
  return bound;
}

std::vector<BoundMetric> kernel_counted_metrics(const std::vector<MetricDeclaration>& metrics) {
  std::vector<BoundMetric> bound;
  for (const MetricDeclaration& m : metrics) {
    BoundMetric b;
    b.declaration = m;
    bound.push_back(std::move(b));
  }
  return bound;
}

struct Metrics::Series {
  BoundMetric bound;
  std::string signature;
  std::vector<size_t> active;                     // indices into declaration.labels
  std::vector<size_t> radix;                      // slots of each active label
  std::vector<std::optional<LabelFolder>> folders;  // per active label: folded ones
  std::vector<double> bounds;                     // exported
  prometheus::Family<prometheus::Counter>* counter_family = nullptr;
  prometheus::Family<prometheus::Histogram>* histogram_family = nullptr;
  std::vector<prometheus::Counter*> counters;  // by label-slot index
  std::vector<prometheus::Histogram*> histograms;
};

Metrics::Metrics(MetricsConfig config)
    : config_(std::move(config)), registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::BuildGauge()
      .Name("tcptrace_build_info")
      .Help("Version of tcptrace-bcc and of the BCC library it runs on; always 1")
      .Register(*registry_)
      .Add({{"version", config_.version}, {"bcc_version", config_.bcc_version}})
      .Set(1);
  events_ = &prometheus::BuildCounter()
                 .Name("tcptrace_events_total")
                 .Help("Kernel events received and accounted, in JSON lines and metrics alike")
                 .Register(*registry_)
                 .Add({});
  auto& lost = prometheus::BuildCounter()
                   .Name("tcptrace_lost_events_total")
                   .Help("Events lost before they were accounted: buffer (a full perf or ring buffer), "
                         "skipped_run (the kernel skipped a nested run, recursion_misses), truncated (a sample "
                         "shorter than its struct)")
                   .Register(*registry_);
  lost_buffer_ = &lost.Add({{"reason", "buffer"}});
  lost_skipped_ = &lost.Add({{"reason", "skipped_run"}});
  lost_truncated_ = &lost.Add({{"reason", "truncated"}});
  probes_attached_ = &prometheus::BuildGauge()
                          .Name("tcptrace_probes_attached")
                          .Help("Probes currently attached to the kernel")
                          .Register(*registry_)
                          .Add({});
  program_info_ = &prometheus::BuildGauge()
                       .Name("tcptrace_program_info")
                       .Help("The traced program, its attach method and output buffer; always 1")
                       .Register(*registry_);
}

Metrics::~Metrics() = default;

void Metrics::set_program(const std::string& name, const std::string& attach, const std::string& buffer,
                          const std::string& aggregation) {
  if (program_info_child_ != nullptr) program_info_->Remove(program_info_child_);
  program_info_child_ = &program_info_->Add(
      {{"program", name}, {"attach", attach}, {"buffer", buffer}, {"aggregation", aggregation}});
  program_info_child_->Set(1);
}

std::vector<size_t> Metrics::active_labels(const MetricDeclaration& declaration) const {
  std::vector<size_t> active;
  for (size_t i = 0; i < declaration.labels.size(); ++i) {
    const MetricLabel& label = declaration.labels[i];
    if (!label.opt_in || std::find(config_.opt_in_labels.begin(), config_.opt_in_labels.end(), label.name) !=
                             config_.opt_in_labels.end()) {
      active.push_back(i);
    }
  }
  return active;
}

std::string Metrics::signature(const MetricDeclaration& d) const {
  std::string text = (d.kind == MetricKind::counter ? "counter " : "histogram ") + d.name + "\n" + d.help + "\n" +
                     d.unit + "\n";
  for (uint64_t bound : d.bounds) text += std::to_string(bound) + ",";
  for (size_t i : active_labels(d)) {
    const MetricLabel& label = d.labels[i];
    text += "\n" + label.name + ":" + std::to_string(static_cast<int>(label.domain));
    for (const std::string& name : label.names) text += "," + name;
  }
  return text;
}

std::string Metrics::bind(std::vector<BoundMetric> metrics) {
  std::vector<std::unique_ptr<Series>> next;
  std::string names;
  for (BoundMetric& bound : metrics) {
    const std::string sig = signature(bound.declaration);
    names += (names.empty() ? "" : ", ") + bound.declaration.name;
    auto same = std::find_if(series_.begin(), series_.end(),
                             [&](const std::unique_ptr<Series>& s) { return s && s->signature == sig; });
    if (same != series_.end()) {
      // Declared as before: its series continue.
      (*same)->bound = std::move(bound);
      next.push_back(std::move(*same));
      continue;
    }
    auto series = std::make_unique<Series>();
    series->bound = std::move(bound);
    series->signature = sig;
    next.push_back(std::move(series));
  }
  // What is no longer declared (or changed) disappears from the exposition
  // before a family of the same name is registered again.
  for (auto& old : series_) {
    if (!old) continue;
    if (old->counter_family != nullptr) registry_->Remove(*old->counter_family);
    if (old->histogram_family != nullptr) registry_->Remove(*old->histogram_family);
  }
  series_ = std::move(next);
  for (auto& series : series_) {
    if (series->counter_family == nullptr && series->histogram_family == nullptr) create_series(*series);
  }
  return names;
}

void Metrics::create_series(Series& series) {
  const MetricDeclaration& d = series.bound.declaration;
  series.active = active_labels(d);
  series.radix.clear();
  series.folders.clear();
  size_t combinations = 1;
  bool named_only = true;
  size_t named_combinations = 1;
  for (size_t i : series.active) {
    const MetricLabel& label = d.labels[i];
    const size_t slots = label_slots(label, config_.label_limit);
    series.radix.push_back(slots);
    combinations *= slots;
    if (label.domain == LabelDomain::folded) {
      series.folders.emplace_back(LabelFolder(config_.label_limit));
    } else {
      series.folders.emplace_back(std::nullopt);
    }
    named_only &= label.domain == LabelDomain::names || label.domain == LabelDomain::family;
    named_combinations *= slots - 1;
  }
  if (d.kind == MetricKind::counter) {
    series.counter_family = &prometheus::BuildCounter().Name(d.name).Help(d.help).Register(*registry_);
    series.counters.assign(combinations, nullptr);
  } else {
    series.bounds = d.exported_bounds();
    series.histogram_family = &prometheus::BuildHistogram().Name(d.name).Help(d.help).Register(*registry_);
    series.histograms.assign(combinations, nullptr);
  }
  // A metric whose labels all have named values starts with every named
  // combination at zero, so rate(...{outcome="refused"}) is 0, not absent,
  // on a node without any, and the first events after start are not lost to
  // rate(): a series created by its first observation has no earlier sample
  // to rise from. ("unknown" and "other" appear when seen.)
  if (!named_only || named_combinations > 64) return;
  for (size_t n = 0; n < named_combinations; ++n) {
    size_t index = 0, rest = n;
    std::vector<size_t> slots(series.active.size());
    for (size_t j = series.active.size(); j-- > 0;) {
      slots[j] = rest % (series.radix[j] - 1);
      rest /= series.radix[j] - 1;
    }
    for (size_t j = 0; j < series.active.size(); ++j) index = index * series.radix[j] + slots[j];
    if (d.kind == MetricKind::counter) {
      counter(series, index);
    } else {
      histogram(series, index);
    }
  }
}

namespace {

prometheus::Labels labels_of(const MetricDeclaration& d, const std::vector<size_t>& active,
                             const std::vector<size_t>& radix, const std::vector<std::optional<LabelFolder>>& folders,
                             size_t index) {
  prometheus::Labels labels;
  for (size_t j = active.size(); j-- > 0;) {
    const size_t slot = index % radix[j];
    index /= radix[j];
    const MetricLabel& label = d.labels[active[j]];
    labels[label.name] = folders[j] ? folders[j]->label(slot) : label_value(label, slot);
  }
  return labels;
}

}  // namespace

prometheus::Counter& Metrics::counter(Series& series, size_t index) {
  prometheus::Counter*& child = series.counters[index];
  if (child == nullptr) {
    child = &series.counter_family->Add(
        labels_of(series.bound.declaration, series.active, series.radix, series.folders, index));
  }
  return *child;
}

prometheus::Histogram& Metrics::histogram(Series& series, size_t index) {
  prometheus::Histogram*& child = series.histograms[index];
  if (child == nullptr) {
    child = &series.histogram_family->Add(
        labels_of(series.bound.declaration, series.active, series.radix, series.folders, index), series.bounds);
  }
  return *child;
}

void Metrics::observe(size_t table_index, const void* data) {
  events_->Increment();
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (auto& owned : series_) {
    Series& series = *owned;
    const BoundMetric& b = series.bound;
    if (b.table_index != table_index) continue;
    const MetricDeclaration& d = b.declaration;
    bool wanted = true;
    for (size_t i = 0; i < d.conditions.size() && wanted; ++i) {
      wanted = condition_holds(d.conditions[i], read_field(bytes, b.conditions[i]), b.conditions[i].is_signed);
    }
    if (!wanted) continue;
    size_t index = 0;
    for (size_t j = 0; j < series.active.size(); ++j) {
      const size_t label = series.active[j];
      const uint64_t raw = read_field(bytes, b.labels[label]);
      const size_t slot = series.folders[j] ? series.folders[j]->slot(raw) : label_slot(d.labels[label], raw);
      index = index * series.radix[j] + slot;
    }
    const double value = b.value ? static_cast<double>(read_field(bytes, *b.value)) : 1.0;
    if (d.kind == MetricKind::counter) {
      counter(series, index).Increment(value);
    } else {
      histogram(series, index).Observe(value / static_cast<double>(d.unit_divisor));
    }
  }
}

// The kernel's index covers the labels that are not opt-in; an opt-in
// label in use (which makes the host count, so this does not happen)
// would be "other".
size_t Metrics::kernel_to_host_index(const Series& series, size_t kernel_index) const {
  const MetricDeclaration& d = series.bound.declaration;
  std::vector<size_t> slots(d.labels.size(), 0);
  for (size_t i = d.labels.size(); i-- > 0;) {
    if (d.labels[i].opt_in) continue;
    const size_t n = label_slots(d.labels[i], 0);
    slots[i] = kernel_index % n;
    kernel_index /= n;
  }
  size_t index = 0;
  for (size_t j = 0; j < series.active.size(); ++j) {
    const size_t label = series.active[j];
    const size_t slot = d.labels[label].opt_in ? series.radix[j] - 1 : slots[label];
    index = index * series.radix[j] + slot;
  }
  return index;
}

void Metrics::add_kernel_counter(size_t metric, size_t index, uint64_t count) {
  if (metric >= series_.size() || series_[metric]->counter_family == nullptr || count == 0) return;
  Series& series = *series_[metric];
  const size_t host_index = kernel_to_host_index(series, index);
  if (host_index >= series.counters.size()) return;
  counter(series, host_index).Increment(static_cast<double>(count));
}

void Metrics::add_kernel_histogram(size_t metric, size_t index, const std::vector<double>& bucket_increments,
                                   double sum) {
  if (metric >= series_.size() || series_[metric]->histogram_family == nullptr) return;
  Series& series = *series_[metric];
  if (bucket_increments.size() != series.bounds.size() + 1) return;
  const size_t host_index = kernel_to_host_index(series, index);
  if (host_index >= series.histograms.size()) return;
  histogram(series, host_index).ObserveMultiple(bucket_increments, sum);
}

std::vector<Metrics::MetricValues> Metrics::declared_values() const {
  std::vector<MetricValues> all;
  for (const auto& owned : series_) {
    const Series& series = *owned;
    MetricValues metric;
    metric.declaration = &series.bound.declaration;
    const size_t n = std::max(series.counters.size(), series.histograms.size());
    for (size_t index = 0; index < n; ++index) {
      SeriesValues values;
      if (index < series.counters.size() && series.counters[index] != nullptr) {
        values.value = series.counters[index]->Value();
      } else if (index < series.histograms.size() && series.histograms[index] != nullptr) {
        const prometheus::ClientMetric collected = series.histograms[index]->Collect();
        uint64_t below = 0;
        for (const auto& bucket : collected.histogram.bucket) {
          values.buckets.push_back(bucket.cumulative_count - below);
          below = bucket.cumulative_count;
        }
        values.sum = collected.histogram.sample_sum;
      } else {
        continue;
      }
      for (const auto& [name, value] :
           labels_of(series.bound.declaration, series.active, series.radix, series.folders, index)) {
        values.labels[name] = value;
      }
      metric.series.push_back(std::move(values));
    }
    all.push_back(std::move(metric));
  }
  return all;
}

void Metrics::add_events(uint64_t count) { events_->Increment(static_cast<double>(count)); }

void Metrics::add_lost_buffer(uint64_t count) { lost_buffer_->Increment(static_cast<double>(count)); }
void Metrics::add_skipped_runs(uint64_t count) { lost_skipped_->Increment(static_cast<double>(count)); }
void Metrics::add_truncated() { lost_truncated_->Increment(); }
void Metrics::set_probes_attached(size_t count) { probes_attached_->Set(static_cast<double>(count)); }

}  // namespace tcptrace
