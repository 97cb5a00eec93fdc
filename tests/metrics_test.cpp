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
#include "kernel_aggregation.h"

#include <regex>

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

MetricsConfig config(bool dport = false, size_t limit = kDefaultDportLimit) {
  MetricsConfig c;
  c.version = "9.8.7";
  c.bcc_version = "0.26.0";
  c.dport_label = dport;
  c.dport_limit = limit;
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
  EXPECT_EQ(connect_latency_buckets(), expected);
}

TEST(MetricsBuckets, StateDurationFrom100MicrosecondsToOneHour) {
  const std::vector<double> expected = {0.0001, 0.001, 0.01, 0.1, 1, 10, 60, 300, 900, 3600};
  EXPECT_EQ(state_duration_buckets(), expected);
}

// Prometheus buckets count observations <= their bound ("le"): a connect of
// exactly 50 µs is in the first bucket, one of 51 µs only from the second.
TEST(MetricsBuckets, ObservationOnABoundGoesIntoThatBucket) {
  const EventLayout layout = recorded_layout("connlat");
  Metrics metrics(config());
  metrics.bind({&layout}, program_hints("connlat"));
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

TEST(PortLabelFolder, KeepsTheFirstPortsAndFoldsTheRest) {
  PortLabelFolder folder(3);
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
  EXPECT_EQ(metrics.bind({&layout}, program_hints("connlat")), "connlat");
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
  EXPECT_EQ(metrics.bind({&layout}, program_hints("states")), "states");
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
  metrics.bind({&layout}, program_hints("states"));
  metrics.observe(0, EventBytes(layout).set("family", 99).set("oldstate", 200).set("newstate", kClose).data());
  EXPECT_EQ(scrape(metrics).at("tcptrace_tcp_state_transitions_total{family=\"other\",new_state=\"CLOSE\",old_state="
                               "\"UNKNOWN\"}"),
            1);
}

TEST(DportLabel, FoldsPortsBeyondTheLimitIntoOther) {
  const EventLayout layout = recorded_layout("connlat");
  Metrics metrics(config(/*dport=*/true, /*limit=*/2));
  metrics.bind({&layout}, program_hints("connlat"));
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
  metrics.bind({&layout}, program_hints("states"));
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
  // A user program whose events carry neither program's fields: health only.
  auto layout = parse_event_layout({"pid#u32", "fd#s32"});
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(metrics.bind({&*layout, nullptr}, {}), "");
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
  metrics.bind({&states, &connlat}, program_hints("connlat"));
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
  metrics.bind({&layout}, hints);
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

// ---- In-kernel aggregation (kernel_aggregation.h) -------------------------

TEST(KernelAggregation, BucketExpressionIsAChainOverTheBoundsInMicroseconds) {
  EXPECT_EQ(bucket_index_expression({50e-6, 100e-6, 1}),
            "((us) <= 50ULL ? 0 : (us) <= 100ULL ? 1 : (us) <= 1000000ULL ? 2 : 3)");
  EXPECT_EQ(bucket_index_expression({}), "(0)");
}

// The thresholds the BPF program compares against, read back from the flag
// the host hands to BCC.
std::vector<uint64_t> thresholds_in_flag(const std::string& macro) {
  for (const std::string& flag : aggregation_cflags()) {
    if (flag.rfind("-D" + macro + "(us)=", 0) != 0) continue;
    std::vector<uint64_t> thresholds;
    const std::regex step(R"(\(us\) <= (\d+)ULL \? (\d+) :)");
    for (auto it = std::sregex_iterator(flag.begin(), flag.end(), step); it != std::sregex_iterator(); ++it) {
      EXPECT_EQ(std::stoul((*it)[2]), thresholds.size()) << flag;
      thresholds.push_back(std::stoull((*it)[1]));
    }
    return thresholds;
  }
  ADD_FAILURE() << "no -D" << macro << "(us)= flag";
  return {};
}

// The kernel's bucket of `us`, as the flag's expression computes it.
size_t kernel_bucket(const std::vector<uint64_t>& thresholds, uint64_t us) {
  size_t i = 0;
  while (i < thresholds.size() && us > thresholds[i]) ++i;
  return i;
}

// A value on a bound lands in the same bucket on both paths: the kernel
// compares whole µs with the bound in µs, the host compares us / 1e6 with
// the bound in seconds.
TEST(KernelAggregation, FlagsCarryTheExportedBucketsAndAgreeAtEveryEdge) {
  const auto flags = aggregation_cflags();
  const auto has = [&](const std::string& flag) { return std::find(flags.begin(), flags.end(), flag) != flags.end(); };
  EXPECT_TRUE(has("-DTCPTRACE_AGGREGATE=1"));
  EXPECT_TRUE(has("-DTCPTRACE_STATE_DURATION_BUCKETS=11"));
  EXPECT_TRUE(has("-DTCPTRACE_CONNECT_LATENCY_BUCKETS=18"));
  for (const auto& [macro, bounds] : {std::make_pair("TCPTRACE_STATE_DURATION_BUCKET", state_duration_buckets()),
                                      std::make_pair("TCPTRACE_CONNECT_LATENCY_BUCKET", connect_latency_buckets())}) {
    const std::vector<uint64_t> thresholds = thresholds_in_flag(macro);
    ASSERT_EQ(thresholds.size(), bounds.size()) << macro;
    for (size_t i = 0; i < bounds.size(); ++i) {
      for (uint64_t us : {thresholds[i] - 1, thresholds[i], thresholds[i] + 1}) {
        const double seconds = static_cast<double>(us) / 1e6;
        const size_t host_bucket =
            std::lower_bound(bounds.begin(), bounds.end(), seconds) - bounds.begin();  // first bound >= value
        EXPECT_EQ(kernel_bucket(thresholds, us), host_bucket) << macro << " at " << us << " us";
      }
    }
  }
}

// What the BPF program would have in its maps after the given events, laid
// out as kernel_aggregation.h says, with its buckets from the flags.
struct KernelMaps {
  AggregateSnapshot snapshot;
  std::vector<uint64_t> duration_thresholds = thresholds_in_flag("TCPTRACE_STATE_DURATION_BUCKET");
  std::vector<uint64_t> latency_thresholds = thresholds_in_flag("TCPTRACE_CONNECT_LATENCY_BUCKET");

  KernelMaps() {
    snapshot.transitions.assign(aggregate::transitions_entries(), 0);
    snapshot.state_duration.assign(aggregate::state_duration_entries() * aggregate::state_duration_words(), 0);
    snapshot.connect_latency.assign(aggregate::connect_latency_entries() * aggregate::connect_latency_words(), 0);
  }
  void state_change(uint64_t oldstate, uint64_t newstate, int family, uint64_t delta_us) {
    snapshot.transitions[((oldstate & 15) * 16 + (newstate & 15)) * 2 + (family == 6)] += 1;
    if (delta_us == 0) return;
    const size_t base = (oldstate & 15) * aggregate::state_duration_words();
    snapshot.state_duration[base + kernel_bucket(duration_thresholds, delta_us)] += 1;
    snapshot.state_duration[base + aggregate::state_duration_words() - 1] += delta_us;
  }
  void connect(uint64_t outcome, int family, uint64_t latency_us) {
    const size_t base = ((outcome & 15) * 2 + (family == 6)) * aggregate::connect_latency_words();
    snapshot.connect_latency[base + kernel_bucket(latency_thresholds, latency_us)] += 1;
    snapshot.connect_latency[base + aggregate::connect_latency_words() - 1] += latency_us;
  }
};

// The same events, counted in the host from their bytes and in the kernel's
// maps read in two scrapes, give the same exposition: every series, every
// value (sums to rounding: the host adds seconds one event at a time).
TEST(KernelAggregation, SameEventsGiveTheSameExpositionAsHostAggregation) {
  const EventLayout states = recorded_layout("states");
  const EventLayout connlat = recorded_layout("connlat");
  const auto hints = program_hints("connlat");
  Metrics host(config());
  host.bind({&states, &connlat}, hints);
  Metrics kernel(config());
  EXPECT_EQ(kernel.bind_aggregates(true, true, hints), "states, connlat");
  KernelMaps maps;
  AggregateFeed feed;

  struct StateChange { uint64_t oldstate, newstate; int family; uint64_t delta_us; };
  const std::vector<StateChange> first = {
      {7, 2, 4, 0}, {2, 1, 4, 100}, {2, 1, 4, 101}, {1, 4, 6, 3600000000ULL}, {1, 4, 6, 3600000001ULL},
      {10, 3, 4, 0}, {3, 1, 6, 1}};
  const std::vector<StateChange> second = {{2, 1, 4, 1000}, {8, 9, 6, 59999999}, {9, 7, 4, 60000000}, {14, 15, 4, 7}};
  struct Connect { uint64_t outcome; int family; uint64_t latency_us; };
  const std::vector<Connect> connects = {{0, 4, 50}, {0, 4, 51}, {0, 6, 10000000}, {0, 6, 10000001},
                                         {1, 4, 20}, {2, 4, 3000000}, {9, 4, 5}};
  uint64_t fed = 0;
  for (const auto& [round, changes] : {std::make_pair(0, first), std::make_pair(1, second)}) {
    for (const StateChange& c : changes) {
      host.observe(0, EventBytes(states)
                          .set("oldstate", c.oldstate)
                          .set("newstate", c.newstate)
                          .set("family", c.family)
                          .set("delta_us", c.delta_us)
                          .data());
      maps.state_change(c.oldstate, c.newstate, c.family, c.delta_us);
    }
    if (round == 1) {
      for (const Connect& c : connects) {
        host.observe(1, EventBytes(connlat)
                            .set("outcome", c.outcome)
                            .set("family", c.family)
                            .set("latency_us", c.latency_us)
                            .data());
        maps.connect(c.outcome, c.family, c.latency_us);
      }
    }
    fed += feed.feed(maps.snapshot, kernel);
  }
  EXPECT_EQ(fed, first.size() + second.size() + connects.size());

  const auto from_host = scrape(host);
  const auto from_kernel = scrape(kernel);
  ASSERT_EQ(from_kernel.size(), from_host.size());
  for (const auto& [series, value] : from_host) {
    ASSERT_EQ(from_kernel.count(series), 1u) << series;
    if (series.find("_sum{") != std::string::npos) {
      EXPECT_NEAR(from_kernel.at(series), value, 1e-9 * std::max(1.0, value)) << series;
    } else {
      EXPECT_EQ(from_kernel.at(series), value) << series;
    }
  }
  EXPECT_EQ(from_kernel.at("tcptrace_tcp_state_transitions_total{family=\"ipv4\",new_state=\"ESTABLISHED\","
                           "old_state=\"SYN_SENT\"}"),
            3);
  EXPECT_EQ(from_kernel.at("tcptrace_tcp_connects_total{outcome=\"unknown\"}"), 1);
  EXPECT_EQ(from_kernel.at("tcptrace_events_total"), 18);
}

// A read that finds nothing new adds nothing, and a counter that went
// backwards (it cannot while the program is loaded) is not subtracted.
TEST(KernelAggregation, OnlyGrowthIsCounted) {
  Metrics metrics(config());
  metrics.bind_aggregates(false, true, program_hints("connlat"));
  KernelMaps maps;
  maps.snapshot.transitions.clear();
  maps.snapshot.state_duration.clear();
  AggregateFeed feed;
  maps.connect(1, 4, 40);
  maps.connect(1, 4, 40);
  EXPECT_EQ(feed.feed(maps.snapshot, metrics), 2u);
  EXPECT_EQ(feed.feed(maps.snapshot, metrics), 0u);
  AggregateSnapshot shrunk = maps.snapshot;
  shrunk.connect_latency.assign(shrunk.connect_latency.size(), 0);
  EXPECT_EQ(feed.feed(shrunk, metrics), 0u);
  const auto series = scrape(metrics);
  EXPECT_EQ(series.at("tcptrace_tcp_connects_total{outcome=\"refused\"}"), 2);
  EXPECT_EQ(series.at("tcptrace_tcp_connect_latency_seconds_bucket{family=\"ipv4\",outcome=\"refused\",le=\"5e-05\"}"), 2);
  EXPECT_EQ(series.at("tcptrace_events_total"), 2);
  EXPECT_EQ(series.count("tcptrace_tcp_state_transitions_total{family=\"ipv4\",new_state=\"ESTABLISHED\","
                         "old_state=\"SYN_SENT\"}"),
            0u);
}

}  // namespace
}  // namespace tcptrace
