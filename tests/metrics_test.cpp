// Metrics without root: address parsing, bucket layouts, label folding, and
// the exposition text made from events laid out as BCC described the
// built-in programs' structs (bench/data/*.check.json, recorded by --check)
// with the programs' own format hints.
#include "metrics.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "event_output.h"
#include "kernel_counting.h"
#include "metric_declarations.h"

#include <random>
#include <regex>

// The code the host generates to count states', connlat's and retrans's metrics in the
// kernel (kernel_counting_gen), compiled here with stand-ins for BCC's map
// macro: a per-CPU array becomes one CPU's array, lookup() its element.
namespace generated_kernel {
using u8 = uint8_t;
using u16 = uint16_t;
using u32 = uint32_t;
using u64 = uint64_t;
using s64 = int64_t;
template <typename T, size_t N>
struct PercpuArray {
  T values[N] = {};
  T* lookup(const u32* index) { return *index < N ? &values[*index] : nullptr; }
};
#define BPF_PERCPU_ARRAY(name, type, entries) PercpuArray<type, entries> name
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#undef __always_inline
#define __always_inline inline
// The fields the declarations read, with the programs' types.
namespace states {
struct event {
  u16 family;
  u16 dport;
  u8 oldstate;
  u8 newstate;
  u64 delta_us;
};
}  // namespace states
namespace connlat {
struct event {
  u16 family;
  u16 dport;
  u64 latency_us;
  u8 outcome;
};
}  // namespace connlat
namespace retrans {
struct event {
  u16 family;
  u16 dport;
  u8 state;
  u8 kind;
  u16 segs;
};
}  // namespace retrans
#include "kernel_counting_generated.h"
#pragma GCC diagnostic pop
#undef BPF_PERCPU_ARRAY

// An array's contents as the host reads them: flat, entry * words + word.
template <size_t N>
std::vector<uint64_t> flat(const PercpuArray<u64, N>& map) {
  return std::vector<uint64_t>(map.values, map.values + N);
}
template <typename T, size_t N>
std::vector<uint64_t> flat(const PercpuArray<T, N>& map) {
  std::vector<uint64_t> words;
  for (const T& value : map.values) words.insert(words.end(), std::begin(value.words), std::end(value.words));
  return words;
}
// What the host reads from a program's two metric arrays and its count.
template <typename M0, typename M1, typename Counted>
tcptrace::KernelCountSnapshot snapshot_of(const M0& m0, const M1& m1, const Counted& counted) {
  tcptrace::KernelCountSnapshot snapshot;
  snapshot.metrics = {flat(m0), flat(m1)};
  snapshot.counted = counted.values[0];
  return snapshot;
}
// ... and from a program with one metric.
template <typename M0, typename Counted>
tcptrace::KernelCountSnapshot snapshot_of(const M0& m0, const Counted& counted) {
  tcptrace::KernelCountSnapshot snapshot;
  snapshot.metrics = {flat(m0)};
  snapshot.counted = counted.values[0];
  return snapshot;
}
}  // namespace generated_kernel

namespace tcptrace {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The layout BCC reported for a built-in program's event struct.
EventLayout recorded_layout(const std::string& program) {
  const auto check = nlohmann::json::parse(read_text(std::string(TCPTRACE_SOURCE_DIR) + "/bench/data/" + program +
                                                     ".check.json"));
  std::vector<std::string> descriptions;
  for (const auto& field : check.at("outputs").at(0).at("fields")) {
    descriptions.push_back(field.at("name").get<std::string>() + "#" + field.at("type").get<std::string>());
  }
  auto layout = parse_event_layout(descriptions);
  EXPECT_TRUE(layout.ok());
  return std::move(layout).value();
}

std::vector<FormatHint> program_hints(const std::string& program) {
  auto hints = parse_format_hints(read_text(std::string(TCPTRACE_SOURCE_DIR) + "/programs/" + program + ".bpf.c"));
  EXPECT_TRUE(hints.ok());
  return std::move(hints).value();
}

ProgramDeclarations program_declarations(const std::string& program) {
  const std::string path = std::string(TCPTRACE_SOURCE_DIR) + "/programs/" + program + ".bpf.c";
  auto declarations = parse_program_declarations(read_text(path), path, program_hints(program));
  EXPECT_TRUE(declarations.ok()) << declarations.error().message;
  return std::move(declarations).value();
}

// Binds the metrics the programs declare, table i carrying the events of
// tables[i].first laid out as tables[i].second; returns what bind() does.
std::string bind_programs(Metrics& metrics, const std::vector<std::pair<std::string, const EventLayout*>>& tables) {
  std::vector<MetricDeclaration> all;
  std::vector<std::string> names;
  std::vector<const EventLayout*> layouts;
  for (const auto& [program, layout] : tables) {
    for (MetricDeclaration m : program_declarations(program).metrics) {
      m.table = program;
      all.push_back(std::move(m));
    }
    names.push_back(program);
    layouts.push_back(layout);
  }
  auto bound = bind_metric_fields(all, names, layouts, "test");
  EXPECT_TRUE(bound.ok()) << bound.error().message;
  return metrics.bind(std::move(bound).value());
}

// One event's bytes, fields set by name.
class EventBytes {
 public:
  explicit EventBytes(const EventLayout& layout) : layout_(layout), bytes_(layout.size, 0) {}
  EventBytes& set(const std::string& name, uint64_t value) {
    const FieldLayout* f = layout_.find(name);
    EXPECT_NE(f, nullptr) << name;
    std::memcpy(bytes_.data() + f->offset, &value, f->element_size);  // little-endian host
    return *this;
  }
  const void* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }

 private:
  const EventLayout& layout_;
  std::vector<unsigned char> bytes_;
};

// The exposition text as "name{labels}" -> value.
std::map<std::string, double> scrape(const Metrics& metrics) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, metrics.registry()->Collect());
  std::map<std::string, double> series;
  std::istringstream lines(out.str());
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    series[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return series;
}

MetricsConfig config(bool dport = false, size_t limit = kDefaultLabelLimit) {
  MetricsConfig c;
  c.version = "9.8.7";
  c.bcc_version = "0.26.0";
  if (dport) c.opt_in_labels = {"dport"};
  c.label_limit = limit;
  return c;
}

constexpr uint64_t kSynSent = 2, kEstablished = 1, kClose = 7, kFinWait1 = 4;
constexpr uint64_t kEstablishedOutcome = 0, kRefusedOutcome = 1;

TEST(MetricsAddress, AcceptsIpLiteralsWithPort) {
  auto v4 = parse_metrics_address("127.0.0.1:9464");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 9464);
  EXPECT_EQ(v4->listen_spec(), "127.0.0.1:9464");
  auto any = parse_metrics_address("0.0.0.0:0");
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->port, 0) << "port 0: a free one";
  auto v6 = parse_metrics_address("[::1]:9464");
  ASSERT_TRUE(v6.ok());
  EXPECT_TRUE(v6->ipv6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->listen_spec(), "[::1]:9464");
  EXPECT_EQ(v6->authority(40000), "[::1]:40000");
}

TEST(MetricsAddress, RejectsWhatIsNotIpColonPort) {
  for (const char* bad : {"", "9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "127.0.0.1:-1",
                          "127.0.0.1:94x", "localhost:9464", "::1:9464", "[::1]9464", "[::1:9464", "[1.2.3.4]:80",
                          "300.0.0.1:80"}) {
    auto parsed = parse_metrics_address(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.error().exit_code, ExitCode::usage) << bad;
    EXPECT_EQ(parsed.error().message.rfind("--metrics: '" + std::string(bad) + "' ", 0), 0u)
        << parsed.error().message;
  }
}

TEST(MetricsBuckets, ConnectLatencyFrom50MicrosecondsTo10Seconds) {
  const std::vector<double> expected = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                        0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,     10};
  EXPECT_EQ(program_declarations("connlat").metrics.at(1).exported_bounds(), expected);
}

TEST(MetricsBuckets, StateDurationFrom100MicrosecondsToOneHour) {
  const std::vector<double> expected = {0.0001, 0.001, 0.01, 0.1, 1, 10, 60, 300, 900, 3600};
  EXPECT_EQ(program_declarations("states").metrics.at(1).exported_bounds(), expected);
}

// Prometheus buckets count observations <= their bound ("le"): a connect of
// exactly 50 µs is in the first bucket, one of 51 µs only from the second.
TEST(MetricsBuckets, ObservationOnABoundGoesIntoThatBucket) {
  const EventLayout layout = recorded_layout("connlat");
  Metrics metrics(config());
  bind_programs(metrics, {{"connlat", &layout}});
  metrics.observe(0, EventBytes(layout).set("family", 4).set("latency_us", 50).data());
  metrics.observe(0, EventBytes(layout).set("family", 4).set("latency_us", 51).data());
  metrics.observe(0, EventBytes(layout).set("family", 4).set("latency_us", 20000000).data());
  const auto series = scrape(metrics);
  const std::string prefix = "tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv4\",outcome=\"established\",le=";
  EXPECT_EQ(series.at(prefix + "\"5e-05\"}"), 1);
  EXPECT_EQ(series.at(prefix + "\"0.0001\"}"), 2);
  EXPECT_EQ(series.at(prefix + "\"10\"}"), 2) << "20 s is beyond the last bound";
  EXPECT_EQ(series.at(prefix + "\"+Inf\"}"), 3);
  EXPECT_DOUBLE_EQ(series.at("tcptrace_tcp_connect_latency_seconds_sum{family=\"ipv4\",outcome=\"established\"}"),
                   20.000101);
}

TEST(LabelFolder, KeepsTheFirstValuesAndFoldsTheRest) {
  LabelFolder folder(3);
  EXPECT_EQ(folder.slot(443), 0u);
  EXPECT_EQ(folder.slot(80), 1u);
  EXPECT_EQ(folder.slot(443), 0u) << "a known port keeps its slot";
  EXPECT_EQ(folder.slot(8080), 2u);
  EXPECT_EQ(folder.slot(22), 3u);
  EXPECT_EQ(folder.slot(25), 3u);
  EXPECT_EQ(folder.slot(80), 1u) << "known ports still count as themselves after the limit";
  EXPECT_EQ(folder.other_slot(), 3u);
  EXPECT_EQ(folder.slots(), 4u);
  EXPECT_EQ(folder.label(0), "443");
  EXPECT_EQ(folder.label(2), "8080");
  EXPECT_EQ(folder.label(3), "other");
  EXPECT_EQ(folder.slot(0), 3u) << "port 0 is a port like any other, folded when no slot is left";
}

TEST(ConnlatMetrics, CountsAndLatencyByOutcomeAndFamily) {
  const EventLayout layout = recorded_layout("connlat");
  Metrics metrics(config());
  EXPECT_EQ(bind_programs(metrics, {{"connlat", &layout}}),
            "tcptrace_tcp_connects_total, tcptrace_tcp_connect_latency_seconds");
  for (int i = 0; i < 5; ++i) {
    metrics.observe(0, EventBytes(layout).set("family", 4).set("latency_us", 40).set("outcome", kEstablishedOutcome)
                           .data());
  }
  for (int i = 0; i < 3; ++i) {
    metrics.observe(0, EventBytes(layout).set("family", 6).set("latency_us", 300).set("outcome", kRefusedOutcome)
                           .data());
  }
  // A value beyond the names of the program's enum() hint.
  metrics.observe(0, EventBytes(layout).set("family", 4).set("latency_us", 1).set("outcome", 200).data());
  const auto series = scrape(metrics);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"established\"}"), 5);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"refused\"}"), 3);
  // Every named outcome exists from the start, so rate() sees 0, not nothing.
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"timeout\"}"), 0);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"failed\"}"), 0);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv6\",outcome=\"timeout\"}"), 0);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv4\",outcome=\"unreachable\",le="
                      "\"+Inf\"}"),
            0);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"unknown\"}"), 1);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv4\",outcome=\"established\"}"), 5);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_count{family=\"ipv6\",outcome=\"refused\"}"), 3);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv6\",outcome=\"refused\",le="
                      "\"0.00025\"}"),
            0);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv6\",outcome=\"refused\",le="
                      "\"0.0005\"}"),
            3);
  EXPECT_EQ(series.at("tcptrace_events_total"), 9);
  EXPECT_EQ(series.count("tcptrace_tcp_state_transitions_total{family=\"ipv4\",new_state=\"ESTABLISHED\","
                         "old_state=\"SYN_SENT\"}"),
            0u);
}

TEST(StatesMetrics, TransitionsAndTimeInTheOldState) {
  const EventLayout layout = recorded_layout("states");
  Metrics metrics(config());
  EXPECT_EQ(bind_programs(metrics, {{"states", &layout}}),
            "tcptrace_tcp_state_transitions_total, tcptrace_tcp_state_duration_seconds");
  // A connection's first transition: the tracer did not see it enter CLOSE.
  metrics.observe(0, EventBytes(layout).set("family", 4).set("oldstate", kClose).set("newstate", kSynSent).data());
  metrics.observe(
      0, EventBytes(layout).set("family", 4).set("oldstate", kSynSent).set("newstate", kEstablished).set("delta_us", 80)
             .data());
  metrics.observe(0, EventBytes(layout)
                         .set("family", 6)
                         .set("oldstate", kEstablished)
                         .set("newstate", kFinWait1)
                         .set("delta_us", 2500000)
                         .data());
  const auto series = scrape(metrics);
  EXPECT_EQ(series.at("tcptrace_tcp_state_transitions_total{family=\"ipv4\",new_state=\"SYN_SENT\",old_state="
                      "\"CLOSE\"}"),
            1);
  EXPECT_EQ(series.at("tcptrace_tcp_state_transitions_total{family=\"ipv4\",new_state=\"ESTABLISHED\",old_state="
                      "\"SYN_SENT\"}"),
            1);
  EXPECT_EQ(series.at("tcptrace_tcp_state_transitions_total{family=\"ipv6\",new_state=\"FIN_WAIT1\",old_state="
                      "\"ESTABLISHED\"}"),
            1);
  EXPECT_EQ(series.count("tcptrace_tcp_state_duration_seconds_count{state=\"CLOSE\"}"), 0u)
      << "delta_us 0 means the start was not seen: no duration";
  EXPECT_EQ(series.at("tcptrace_tcp_state_duration_seconds_bucket{state=\"SYN_SENT\",le=\"0.0001\"}"), 1);
  EXPECT_EQ(series.at("tcptrace_tcp_state_duration_seconds_bucket{state=\"ESTABLISHED\",le=\"1\"}"), 0);
  EXPECT_EQ(series.at("tcptrace_tcp_state_duration_seconds_bucket{state=\"ESTABLISHED\",le=\"10\"}"), 1);
  EXPECT_DOUBLE_EQ(series.at("tcptrace_tcp_state_duration_seconds_sum{state=\"ESTABLISHED\"}"), 2.5);
  EXPECT_EQ(series.count("tcptrace_tcp_connects_total{outcome=\"established\"}"), 0u);
}

TEST(StatesMetrics, UnknownStateValueGetsItsOwnLabel) {
  const EventLayout layout = recorded_layout("states");
  Metrics metrics(config());
  bind_programs(metrics, {{"states", &layout}});
  metrics.observe(0, EventBytes(layout).set("family", 99).set("oldstate", 200).set("newstate", kClose).data());
  EXPECT_EQ(scrape(metrics).at("tcptrace_tcp_state_transitions_total{family=\"other\",new_state=\"CLOSE\",old_state="
                               "\"UNKNOWN\"}"),
            1);
}

TEST(DportLabel, FoldsPortsBeyondTheLimitIntoOther) {
  const EventLayout layout = recorded_layout("connlat");
  Metrics metrics(config(/*dport=*/true, /*limit=*/2));
  bind_programs(metrics, {{"connlat", &layout}});
  for (uint64_t port : {443, 80, 443, 22, 25, 80}) {
    metrics.observe(0, EventBytes(layout).set("family", 4).set("dport", port).set("latency_us", 100).data());
  }
  const auto series = scrape(metrics);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{dport=\"443\",outcome=\"established\"}"), 2);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{dport=\"80\",outcome=\"established\"}"), 2);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{dport=\"other\",outcome=\"established\"}"), 2);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_count{dport=\"other\",family=\"ipv4\",outcome="
                      "\"established\"}"),
            2);
  size_t connect_series = 0, latency_series = 0;
  for (const auto& [name, value] : series) {
    connect_series += name.rfind("tcptrace_tcp_connects_total{", 0) == 0;
    latency_series += name.rfind("tcptrace_tcp_connect_latency_seconds_count{", 0) == 0;
  }
  EXPECT_EQ(connect_series, 3u) << "two ports plus other; no pre-created series without a port";
  EXPECT_EQ(latency_series, 3u);
}

TEST(DportLabel, StatesTransitionsCarryItButDurationsDoNot) {
  const EventLayout layout = recorded_layout("states");
  Metrics metrics(config(/*dport=*/true, /*limit=*/1));
  bind_programs(metrics, {{"states", &layout}});
  metrics.observe(0, EventBytes(layout)
                         .set("family", 4)
                         .set("dport", 5432)
                         .set("oldstate", kSynSent)
                         .set("newstate", kEstablished)
                         .set("delta_us", 10)
                         .data());
  metrics.observe(0, EventBytes(layout)
                         .set("family", 4)
                         .set("dport", 6379)
                         .set("oldstate", kSynSent)
                         .set("newstate", kEstablished)
                         .set("delta_us", 10)
                         .data());
  const auto series = scrape(metrics);
  EXPECT_EQ(series.at("tcptrace_tcp_state_transitions_total{dport=\"5432\",family=\"ipv4\",new_state=\"ESTABLISHED\","
                      "old_state=\"SYN_SENT\"}"),
            1);
  EXPECT_EQ(series.at("tcptrace_tcp_state_transitions_total{dport=\"other\",family=\"ipv4\",new_state="
                      "\"ESTABLISHED\",old_state=\"SYN_SENT\"}"),
            1);
  EXPECT_EQ(series.at("tcptrace_tcp_state_duration_seconds_count{state=\"SYN_SENT\"}"), 2);
}

TEST(HealthMetrics, NamesLabelsAndBuildInfo) {
  Metrics metrics(config());
  // A user program that declares no metrics: health only.
  auto layout = parse_event_layout({"pid#u32", "fd#s32"});
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(metrics.bind({}), "");
  metrics.observe(0, EventBytes(*layout).data());
  metrics.add_lost_buffer(7);
  metrics.add_skipped_runs(2);
  metrics.add_truncated();
  metrics.set_probes_attached(3);
  metrics.set_program("old", "", "perf", "host");
  metrics.set_program("connlat", "tracepoint", "none", "kernel");
  const auto series = scrape(metrics);
  EXPECT_EQ(series.at("tcptrace_build_info{bcc_version=\"0.26.0\",version=\"9.8.7\"}"), 1);
  EXPECT_EQ(series.at("tcptrace_events_total"), 1);
  EXPECT_EQ(series.at("tcptrace_lost_events_total{reason=\"buffer\"}"), 7);
  EXPECT_EQ(series.at("tcptrace_lost_events_total{reason=\"skipped_run\"}"), 2);
  EXPECT_EQ(series.at("tcptrace_lost_events_total{reason=\"truncated\"}"), 1);
  EXPECT_EQ(series.at("tcptrace_probes_attached"), 3);
  EXPECT_EQ(series.at("tcptrace_program_info{aggregation=\"kernel\",attach=\"tracepoint\",buffer=\"none\","
                      "program=\"connlat\"}"),
            1);
  EXPECT_EQ(series.count("tcptrace_program_info{aggregation=\"host\",attach=\"\",buffer=\"perf\",program=\"old\"}"),
            0u)
      << "a replaced program (--watch) leaves no series behind";
}

// Every metric name follows the Prometheus conventions: the tcptrace_
// prefix, counters ending in _total, durations in seconds.
TEST(HealthMetrics, EveryNameFollowsTheConventions) {
  const EventLayout states = recorded_layout("states");
  const EventLayout connlat = recorded_layout("connlat");
  Metrics metrics(config());
  bind_programs(metrics, {{"states", &states}, {"connlat", &connlat}});
  metrics.observe(0, EventBytes(states).set("family", 4).set("oldstate", 2).set("newstate", 1).set("delta_us", 5)
                         .data());
  metrics.observe(1, EventBytes(connlat).set("family", 4).data());
  metrics.set_program("both", "", "perf", "host");
  size_t families = 0;
  for (const auto& family : metrics.registry()->Collect()) {
    ++families;
    EXPECT_EQ(family.name.rfind("tcptrace_", 0), 0u) << family.name;
    const bool counter = family.type == prometheus::MetricType::Counter;
    const bool ends_total = family.name.size() > 6 && family.name.substr(family.name.size() - 6) == "_total";
    EXPECT_EQ(counter, ends_total) << family.name;
    if (family.type == prometheus::MetricType::Histogram) {
      EXPECT_NE(family.name.find("_seconds"), std::string::npos) << family.name;
    }
    EXPECT_FALSE(family.help.empty()) << family.name;
  }
  EXPECT_EQ(families, 9u);
}

// --output none: events reach the metrics and the counters, stdout nothing.
TEST(EventOutputWithMetrics, OutputNoneFormatsNothing) {
  const WallClock clock(0);
  const EventLayout layout = recorded_layout("connlat");
  const auto hints = program_hints("connlat");
  Metrics metrics(config());
  bind_programs(metrics, {{"connlat", &layout}});
  std::vector<std::optional<EventDecoder>> decoders;
  auto decoder = EventDecoder::make(layout, hints, "events", DecoderOptions{}, clock);
  ASSERT_TRUE(decoder.ok());
  decoders.emplace_back(std::move(decoder).value());
  StdoutWriter writer(-1, std::nullopt);  // a write would fail: nothing may be written
  EventOutput sink(writer, std::move(decoders), {"events"}, nullptr, &metrics, /*json=*/false);
  EventBytes event(layout);
  event.set("family", 4).set("outcome", kRefusedOutcome).set("latency_us", 30);
  sink.on_event(0, event.data(), event.size());
  sink.on_event(0, event.data(), event.size() - 1);
  sink.on_lost(0, 1, 4);
  EXPECT_TRUE(writer.buffer().empty());
  EXPECT_EQ(writer.events(), 1u);
  EXPECT_EQ(writer.truncated(), 1u);
  const auto series = scrape(metrics);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"refused\"}"), 1);
  EXPECT_EQ(series.at("tcptrace_lost_events_total{reason=\"truncated\"}"), 1);
  EXPECT_EQ(series.at("tcptrace_lost_events_total{reason=\"buffer\"}"), 4);
  EXPECT_EQ(series.at("tcptrace_events_total"), 1);
}

// ---- In-kernel counting (kernel_counting.h) -------------------------------

TEST(KernelCounting, BucketExpressionIsAChainOverTheBoundsInTheFieldsUnit) {
  EXPECT_EQ(bucket_expression({50, 100, 1000000}, "x"),
            "(x <= 50ULL ? 0 : x <= 100ULL ? 1 : x <= 1000000ULL ? 2 : 3)");
  EXPECT_EQ(bucket_expression({}, "x"), "(0)");
}

// Random events through both paths: the host counts their bytes, the code
// generated for the kernel (compiled above from the programs' own
// declarations) counts them in its arrays, which are fed as two scrapes
// would read them. Every series and value is the same (sums to rounding:
// the host adds seconds one event at a time).
TEST(KernelCounting, GeneratedCodeCountsRandomEventsAsTheHostDoes) {
  const EventLayout states_layout = recorded_layout("states");
  const EventLayout connlat_layout = recorded_layout("connlat");
  Metrics host(config());
  bind_programs(host, {{"states", &states_layout}});
  Metrics host_connlat(config());
  bind_programs(host_connlat, {{"connlat", &connlat_layout}});
  Metrics kernel(config());
  kernel.bind(kernel_counted_metrics(program_declarations("states").metrics));
  Metrics kernel_connlat(config());
  kernel_connlat.bind(kernel_counted_metrics(program_declarations("connlat").metrics));
  KernelCountFeed feed(program_declarations("states").metrics);
  KernelCountFeed feed_connlat(program_declarations("connlat").metrics);

  // Values on and beside every bound, 0 (a start not seen), huge ones (not
  // so huge that 10 000 of them overflow the kernel's u64 sum), and
  // label values beyond every name (state 200, family 99, outcome 9).
  std::vector<uint64_t> durations = {0, 1, 2, 1ULL << 36, 1ULL << 40};
  const ProgramDeclarations states_declared = program_declarations("states");
  const ProgramDeclarations connlat_declared = program_declarations("connlat");
  for (uint64_t bound : states_declared.metrics.at(1).bounds) {
    durations.insert(durations.end(), {bound - 1, bound, bound + 1});
  }
  std::vector<uint64_t> latencies = {0, 1, 1ULL << 40};
  for (uint64_t bound : connlat_declared.metrics.at(1).bounds) {
    latencies.insert(latencies.end(), {bound - 1, bound, bound + 1});
  }
  const uint64_t families[] = {2, 4, 6, 10, 0, 99};
  std::mt19937_64 random(20261128);
  const auto pick = [&](const auto& values) { return values[random() % std::size(values)]; };
  size_t events = 0;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 5000; ++i) {
      generated_kernel::states::event s{};
      s.family = static_cast<uint16_t>(pick(families));
      s.oldstate = static_cast<uint8_t>(random() % 4 == 0 ? 200 + random() % 50 : random() % 17);
      s.newstate = static_cast<uint8_t>(random() % 17);
      s.delta_us = pick(durations);
      generated_kernel::states::tcptrace_submit_events(nullptr, &s);
      host.observe(0, EventBytes(states_layout)
                          .set("family", s.family)
                          .set("oldstate", s.oldstate)
                          .set("newstate", s.newstate)
                          .set("delta_us", s.delta_us)
                          .data());
      generated_kernel::connlat::event c{};
      c.family = static_cast<uint16_t>(pick(families));
      c.outcome = static_cast<uint8_t>(random() % 10);
      c.latency_us = pick(latencies);
      generated_kernel::connlat::tcptrace_submit_events(nullptr, &c);
      host_connlat.observe(0, EventBytes(connlat_layout)
                                  .set("family", c.family)
                                  .set("outcome", c.outcome)
                                  .set("latency_us", c.latency_us)
                                  .data());
      events += 1;
    }
    using namespace generated_kernel;
    EXPECT_EQ(feed.feed(snapshot_of(states::tcptrace_m0, states::tcptrace_m1, states::tcptrace_counted), kernel), 5000u);
    EXPECT_EQ(feed_connlat.feed(snapshot_of(connlat::tcptrace_m0, connlat::tcptrace_m1, connlat::tcptrace_counted),
                                kernel_connlat),
              5000u);
  }
  for (const auto& [from_host, from_kernel] :
       {std::make_pair(scrape(host), scrape(kernel)), std::make_pair(scrape(host_connlat), scrape(kernel_connlat))}) {
    ASSERT_EQ(from_kernel.size(), from_host.size());
    size_t nonzero = 0;
    for (const auto& [series, value] : from_host) {
      ASSERT_EQ(from_kernel.count(series), 1u) << series;
      nonzero += value != 0;
      if (series.find("_sum{") != std::string::npos) {
        EXPECT_NEAR(from_kernel.at(series), value, 1e-9 * std::max(1.0, value)) << series;
      } else {
        EXPECT_EQ(from_kernel.at(series), value) << series;
      }
    }
    EXPECT_GT(nonzero, 100u) << "the random events reach many series";
    EXPECT_EQ(from_kernel.at("tcptrace_events_total"), static_cast<double>(events));
  }
  EXPECT_GT(scrape(kernel).at("tcptrace_tcp_state_transitions_total{family=\"other\",new_state=\"CLOSE\","
                              "old_state=\"UNKNOWN\"}"),
            0);
  EXPECT_GT(scrape(kernel_connlat).at("tcptrace_tcp_connects_total{outcome=\"unknown\"}"), 0);
}

// retrans's counter adds a field (value=segs), not 1: the generated code
// and the host add the same segments to the same series, for kinds, states
// and families beyond their names too.
TEST(KernelCounting, GeneratedCodeAddsRetransmittedSegmentsAsTheHostDoes) {
  const EventLayout layout = recorded_layout("retrans");
  Metrics host(config());
  bind_programs(host, {{"retrans", &layout}});
  Metrics kernel(config());
  kernel.bind(kernel_counted_metrics(program_declarations("retrans").metrics));
  KernelCountFeed feed(program_declarations("retrans").metrics);
  const uint64_t families[] = {4, 6, 0, 99};
  const uint64_t segs[] = {1, 1, 1, 2, 3, 44, 65535};
  std::mt19937_64 random(20261129);
  uint64_t total = 0;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 5000; ++i) {
      generated_kernel::retrans::event r{};
      r.family = static_cast<uint16_t>(families[random() % std::size(families)]);
      r.state = static_cast<uint8_t>(random() % 4 == 0 ? 200 + random() % 50 : random() % 17);
      r.kind = static_cast<uint8_t>(random() % 3);
      r.segs = static_cast<uint16_t>(segs[random() % std::size(segs)]);
      generated_kernel::retrans::tcptrace_submit_events(nullptr, &r);
      host.observe(0, EventBytes(layout)
                          .set("family", r.family)
                          .set("state", r.state)
                          .set("kind", r.kind)
                          .set("segs", r.segs)
                          .data());
      total += r.segs;
    }
    using namespace generated_kernel;
    EXPECT_EQ(feed.feed(snapshot_of(retrans::tcptrace_m0, retrans::tcptrace_counted), kernel), 5000u);
  }
  const auto from_host = scrape(host);
  const auto from_kernel = scrape(kernel);
  ASSERT_EQ(from_kernel.size(), from_host.size());
  double sum = 0;
  size_t nonzero = 0;
  for (const auto& [series, value] : from_host) {
    ASSERT_EQ(from_kernel.count(series), 1u) << series;
    EXPECT_EQ(from_kernel.at(series), value) << series;
    if (series.rfind("tcptrace_tcp_retransmits_total{", 0) == 0) {
      sum += value;
      nonzero += value != 0;
    }
  }
  EXPECT_EQ(sum, static_cast<double>(total)) << "segments, not events";
  EXPECT_GT(nonzero, 60u) << "the random events reach many series";
  EXPECT_EQ(from_kernel.at("tcptrace_events_total"), 10000.0);
  EXPECT_GT(from_kernel.at("tcptrace_tcp_retransmits_total{family=\"other\",kind=\"unknown\",state=\"UNKNOWN\"}"), 0);
}

// A read that finds nothing new adds nothing, and a counter that went
// backwards (it cannot while the program is loaded) is not subtracted.
TEST(KernelCounting, OnlyGrowthIsCounted) {
  const std::vector<MetricDeclaration> declared = program_declarations("connlat").metrics;
  Metrics metrics(config());
  metrics.bind(kernel_counted_metrics(declared));
  KernelCountFeed feed(declared);
  KernelCountSnapshot now;
  now.metrics = {std::vector<uint64_t>(kernel_entries(declared[0]) * kernel_words(declared[0]), 0),
                 std::vector<uint64_t>(kernel_entries(declared[1]) * kernel_words(declared[1]), 0)};
  // Two refused (outcome 1) IPv4 (family slot 0) connects of 40 us: bucket 0.
  now.metrics[0][1] = 2;
  const size_t entry = 1 * 3 + 0;
  now.metrics[1][entry * kernel_words(declared[1]) + 0] = 2;
  now.metrics[1][entry * kernel_words(declared[1]) + kernel_words(declared[1]) - 1] = 80;
  now.counted = 2;
  EXPECT_EQ(feed.feed(now, metrics), 2u);
  EXPECT_EQ(feed.feed(now, metrics), 0u);
  KernelCountSnapshot shrunk = now;
  for (auto& words : shrunk.metrics) words.assign(words.size(), 0);
  shrunk.counted = 0;
  EXPECT_EQ(feed.feed(shrunk, metrics), 0u);
  const auto series = scrape(metrics);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"refused\"}"), 2);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv4\",outcome=\"refused\",le=\"5e-05\"}"), 2);
  EXPECT_DOUBLE_EQ(series.at("tcptrace_tcp_connect_latency_seconds_sum{family=\"ipv4\",outcome=\"refused\"}"), 80e-6);
  EXPECT_EQ(series.at("tcptrace_events_total"), 2);
}

}  // namespace
}  // namespace tcptrace
