#include "metrics.h"

#include <arpa/inet.h>

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

// A member usable as a number: a plain integer of 1, 2, 4 or 8 bytes.
std::optional<std::pair<size_t, size_t>> integer_field(const EventLayout& layout, std::string_view name) {
  const FieldLayout* f = layout.find(name);
  if (f == nullptr || f->is_array) return std::nullopt;
  if (f->kind != ScalarKind::unsigned_int && f->kind != ScalarKind::signed_int) return std::nullopt;
  if (f->element_size != 1 && f->element_size != 2 && f->element_size != 4 && f->element_size != 8) {
    return std::nullopt;
  }
  return std::make_pair(f->offset, f->element_size);
}

size_t family_index(uint64_t family) {
  if (family == 4 || family == AF_INET) return 0;
  if (family == 6 || family == AF_INET6) return 1;
  return 2;
}

constexpr std::string_view kFamilyLabels[] = {"ipv4", "ipv6", "other"};

std::string state_label(size_t state) {
  const std::string_view name = tcp_state_name(state);
  return name.empty() ? "UNKNOWN" : std::string(name);
}

}  // namespace

std::string_view family_label(uint64_t family) { return kFamilyLabels[family_index(family)]; }

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

const std::vector<double>& connect_latency_buckets() {
  static const std::vector<double> buckets = {50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                                              50e-3, 100e-3, 250e-3, 500e-3, 1,    2.5,    5,    10};
  return buckets;
}

const std::vector<double>& state_duration_buckets() {
  static const std::vector<double> buckets = {100e-6, 1e-3, 10e-3, 100e-3, 1, 10, 60, 300, 900, 3600};
  return buckets;
}

PortLabelFolder::PortLabelFolder(size_t limit) : limit_(limit), slot_of_port_(65536, 0) { ports_.reserve(limit); }

size_t PortLabelFolder::slot(uint16_t port) {
  const uint16_t known = slot_of_port_[port];
  if (known != 0) return known - 1u;
  if (ports_.size() >= limit_) return limit_;
  ports_.push_back(port);
  slot_of_port_[port] = static_cast<uint16_t>(ports_.size());
  return ports_.size() - 1;
}

std::string PortLabelFolder::label(size_t slot) const {
  return slot < ports_.size() ? std::to_string(ports_[slot]) : "other";
}

Metrics::Metrics(MetricsConfig config)
    : config_(std::move(config)),
      registry_(std::make_shared<prometheus::Registry>()),
      dports_(config_.dport_label ? config_.dport_limit : 0),
      dport_slots_(config_.dport_label ? config_.dport_limit + 1 : 1) {
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

std::string Metrics::bind(const std::vector<const EventLayout*>& layouts, const std::vector<FormatHint>& hints) {
  tables_.assign(layouts.size(), TableBinding{});
  bool feeds_states = false, feeds_connlat = false;
  for (size_t i = 0; i < layouts.size(); ++i) {
    if (layouts[i] == nullptr) continue;
    const EventLayout& layout = *layouts[i];
    TableBinding& binding = tables_[i];
    const auto field = [&](std::string_view name) -> std::optional<Field> {
      auto f = integer_field(layout, name);
      if (!f) return std::nullopt;
      return Field{f->first, f->second};
    };
    auto family = field("family");
    auto dport = config_.dport_label ? field("dport") : std::nullopt;
    if (auto oldstate = field("oldstate"), newstate = field("newstate"), delta = field("delta_us");
        oldstate && newstate && delta && family) {
      binding.kind = TableBinding::Kind::states;
      binding.states = StatesTable{*oldstate, *newstate, *family, *delta, dport};
      feeds_states = true;
    } else if (auto outcome = field("outcome"), latency = field("latency_us"); outcome && latency && family) {
      binding.kind = TableBinding::Kind::connlat;
      binding.connlat = ConnlatTable{*outcome, *family, *latency, dport};
      feeds_connlat = true;
    }
  }
  return bind_aggregates(feeds_states, feeds_connlat, hints);
}

std::string Metrics::bind_aggregates(bool states, bool connlat, const std::vector<FormatHint>& hints) {
  if (states) create_states_families();
  if (connlat) {
    for (const FormatHint& hint : hints) {
      if (hint.field == "outcome" && hint.format == FieldFormat::enumeration) outcome_names_ = hint.arguments;
    }
    create_connlat_families();
  }
  return states && connlat ? "states, connlat" : states ? "states" : connlat ? "connlat" : "";
}

void Metrics::create_states_families() {
  if (transitions_ != nullptr) return;
  transitions_ = &prometheus::BuildCounter()
                      .Name("tcptrace_tcp_state_transitions_total")
                      .Help("TCP state changes, by old and new state and address family")
                      .Register(*registry_);
  state_durations_ = &prometheus::BuildHistogram()
                          .Name("tcptrace_tcp_state_duration_seconds")
                          .Help("Time a socket spent in a TCP state before leaving it (transitions whose "
                                "start the tracer did not see are not observed)")
                          .Register(*registry_);
  transition_children_.assign(kStates * kStates * kFamilies * dport_slots_, nullptr);
}

void Metrics::create_connlat_families() {
  if (connects_ != nullptr) return;
  connects_ = &prometheus::BuildCounter()
                   .Name("tcptrace_tcp_connects_total")
                   .Help("Active TCP connects that ended, by outcome")
                   .Register(*registry_);
  connect_latency_ = &prometheus::BuildHistogram()
                          .Name("tcptrace_tcp_connect_latency_seconds")
                          .Help("Time from connect() until the connection was established or failed")
                          .Register(*registry_);
  connect_children_.assign(kOutcomes * dport_slots_, nullptr);
  latency_children_.assign(kOutcomes * kFamilies * dport_slots_, nullptr);
  // Every outcome exists from the start (without the dport label), so
  // rate(...{outcome="refused"}) is 0, not absent, on a node without any,
  // and the first connects after start are not lost to rate(): a series
  // created by its first observation has no earlier sample to rise from.
  if (!config_.dport_label) {
    for (size_t i = 0; i < outcome_names_.size() && i + 1 < kOutcomes; ++i) {
      connect_counter(i, 0, false);
      for (size_t family = 0; family < 2; ++family) latency_histogram(i, family, 0, false);
    }
  }
}

std::string Metrics::outcome_name(size_t index) const {
  return index < outcome_names_.size() && index + 1 < kOutcomes ? outcome_names_[index] : "unknown";
}

// The last slot is "unknown": values the program's enum() hint does not name.
size_t Metrics::outcome_index(uint64_t outcome) const {
  return outcome >= outcome_names_.size() || outcome >= kOutcomes - 1 ? kOutcomes - 1 : static_cast<size_t>(outcome);
}

size_t Metrics::dport_slot(const std::optional<Field>& dport, const unsigned char* data) {
  if (!dport) return 0;
  return dports_.slot(static_cast<uint16_t>(read_unsigned(data, dport->offset, dport->size)));
}

prometheus::Counter& Metrics::transition_counter(size_t old_state, size_t new_state, size_t family, size_t slot,
                                                 bool labelled_dport) {
  prometheus::Counter*& counter =
      transition_children_[((old_state * kStates + new_state) * kFamilies + family) * dport_slots_ + slot];
  if (counter == nullptr) {
    prometheus::Labels labels = {{"old_state", state_label(old_state)},
                                 {"new_state", state_label(new_state)},
                                 {"family", std::string(kFamilyLabels[family])}};
    if (labelled_dport) labels["dport"] = dports_.label(slot);
    counter = &transitions_->Add(labels);
  }
  return *counter;
}

prometheus::Histogram& Metrics::duration_histogram(size_t state) {
  prometheus::Histogram*& histogram = duration_children_[state];
  if (histogram == nullptr) {
    histogram = &state_durations_->Add({{"state", state_label(state)}}, state_duration_buckets());
  }
  return *histogram;
}

prometheus::Counter& Metrics::connect_counter(size_t outcome, size_t slot, bool labelled_dport) {
  prometheus::Counter*& counter = connect_children_[outcome * dport_slots_ + slot];
  if (counter == nullptr) {
    prometheus::Labels labels = {{"outcome", outcome_name(outcome)}};
    if (labelled_dport) labels["dport"] = dports_.label(slot);
    counter = &connects_->Add(labels);
  }
  return *counter;
}

prometheus::Histogram& Metrics::latency_histogram(size_t outcome, size_t family, size_t slot, bool labelled_dport) {
  prometheus::Histogram*& histogram = latency_children_[(outcome * kFamilies + family) * dport_slots_ + slot];
  if (histogram == nullptr) {
    prometheus::Labels labels = {{"outcome", outcome_name(outcome)}, {"family", std::string(kFamilyLabels[family])}};
    if (labelled_dport) labels["dport"] = dports_.label(slot);
    histogram = &connect_latency_->Add(labels, connect_latency_buckets());
  }
  return *histogram;
}

void Metrics::observe(size_t table_index, const void* data) {
  events_->Increment();
  if (table_index >= tables_.size()) return;
  const TableBinding& binding = tables_[table_index];
  const auto* bytes = static_cast<const unsigned char*>(data);
  switch (binding.kind) {
    case TableBinding::Kind::states:
      observe_states(binding.states, bytes);
      break;
    case TableBinding::Kind::connlat:
      observe_connlat(binding.connlat, bytes);
      break;
    case TableBinding::Kind::none:
      break;
  }
}

void Metrics::observe_states(const StatesTable& table, const unsigned char* data) {
  uint64_t old_state = read_unsigned(data, table.oldstate.offset, table.oldstate.size);
  uint64_t new_state = read_unsigned(data, table.newstate.offset, table.newstate.size);
  // Values outside tcp_states.h share slot 0, which no state uses.
  if (old_state >= kStates) old_state = 0;
  if (new_state >= kStates) new_state = 0;
  const size_t family = family_index(read_unsigned(data, table.family.offset, table.family.size));
  const size_t slot = dport_slot(table.dport, data);
  transition_counter(old_state, new_state, family, slot, table.dport.has_value()).Increment();

  // delta_us is 0 when the tracer did not see the socket enter its old
  // state (the first transition of a new socket, or one older than the
  // tracer): no duration to observe.
  const uint64_t delta_us = read_unsigned(data, table.delta_us.offset, table.delta_us.size);
  if (delta_us == 0) return;
  duration_histogram(old_state).Observe(static_cast<double>(delta_us) / 1e6);
}

void Metrics::observe_connlat(const ConnlatTable& table, const unsigned char* data) {
  const size_t outcome = outcome_index(read_unsigned(data, table.outcome.offset, table.outcome.size));
  const size_t family = family_index(read_unsigned(data, table.family.offset, table.family.size));
  const size_t slot = dport_slot(table.dport, data);
  const bool labelled = table.dport.has_value();
  connect_counter(outcome, slot, labelled).Increment();
  const uint64_t latency_us = read_unsigned(data, table.latency_us.offset, table.latency_us.size);
  latency_histogram(outcome, family, slot, labelled).Observe(static_cast<double>(latency_us) / 1e6);
}

void Metrics::add_transitions(size_t old_state, size_t new_state, size_t family, uint64_t count) {
  if (transitions_ == nullptr || count == 0) return;
  if (old_state >= kStates) old_state = 0;
  if (new_state >= kStates) new_state = 0;
  transition_counter(old_state, new_state, family < 2 ? family : 2, 0, false).Increment(static_cast<double>(count));
}

void Metrics::add_state_durations(size_t state, const std::vector<double>& bucket_increments, double sum_seconds) {
  if (state_durations_ == nullptr) return;
  duration_histogram(state < kStates ? state : 0).ObserveMultiple(bucket_increments, sum_seconds);
}

void Metrics::add_connects(size_t outcome, size_t family, const std::vector<double>& bucket_increments,
                           double sum_seconds) {
  if (connects_ == nullptr) return;
  double count = 0;
  for (double n : bucket_increments) count += n;
  if (count == 0) return;
  const size_t index = outcome_index(outcome);
  connect_counter(index, 0, false).Increment(count);
  latency_histogram(index, family < 2 ? family : 2, 0, false).ObserveMultiple(bucket_increments, sum_seconds);
}

void Metrics::add_events(uint64_t count) { events_->Increment(static_cast<double>(count)); }

void Metrics::add_lost_buffer(uint64_t count) { lost_buffer_->Increment(static_cast<double>(count)); }
void Metrics::add_skipped_runs(uint64_t count) { lost_skipped_->Increment(static_cast<double>(count)); }
void Metrics::add_truncated() { lost_truncated_->Increment(); }
void Metrics::set_probes_attached(size_t count) { probes_attached_->Set(static_cast<double>(count)); }

}  // namespace tcptrace
