// tcptrace:metric and tcptrace:output lines (metric_declarations.h): what
// they declare, every mistake reported at its FILE:LINE, and the C text that
// replaces an output line.
#include "metric_declarations.h"

#include <gtest/gtest.h>

#include "kernel_counting.h"

namespace tcptrace {
namespace {

std::vector<FormatHint> hints_of(const std::string& source) {
  auto hints = parse_format_hints(source);
  EXPECT_TRUE(hints.ok());
  return std::move(hints).value();
}

Result<ProgramDeclarations> parse(const std::string& source) {
  return parse_program_declarations(source, "p.bpf.c", hints_of(source));
}

const std::string kGood =
    "/* tcptrace:format outcome=enum(ok,refused) old=tcp_state saddr=ip(fam) num=enum(a,b,c)\n"
    " * tcptrace:metric counter app_connects_total labels=outcome,fam,port:dport? \\\n"
    " *     help=\"Connects, by \\\"outcome\\\"\"\n"
    " * tcptrace:metric histogram app_latency_seconds value=lat_ns unit=ns buckets=log2(1us,1ms) \\\n"
    " *     labels=state:old,cpu:num when=lat_ns!=0 when=err>=-3 help=\"Latency\"\n"
    " * tcptrace:metric counter app_bytes_total value=bytes help=\"Bytes\"\n"
    " */\n"
    "struct event { u64 lat_ns; };\n"
    "// tcptrace:output events event\n";

TEST(MetricDeclarations, ParsesEveryPart) {
  auto parsed = parse(kGood);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->outputs.size(), 1u);
  EXPECT_EQ(parsed->outputs[0].table, "events");
  EXPECT_EQ(parsed->outputs[0].struct_name, "event");
  EXPECT_EQ(parsed->outputs[0].line, 9u);
  ASSERT_EQ(parsed->metrics.size(), 3u);

  const MetricDeclaration& connects = parsed->metrics[0];
  EXPECT_EQ(connects.kind, MetricKind::counter);
  EXPECT_EQ(connects.name, "app_connects_total");
  EXPECT_EQ(connects.help, "Connects, by \"outcome\"");
  EXPECT_EQ(connects.line, 2u);
  ASSERT_EQ(connects.labels.size(), 3u);
  EXPECT_EQ(connects.labels[0].domain, LabelDomain::names);
  EXPECT_EQ(connects.labels[0].names, (std::vector<std::string>{"ok", "refused"}));
  EXPECT_EQ(connects.labels[1].domain, LabelDomain::family) << "the family field of an ip() hint";
  EXPECT_EQ(connects.labels[2].name, "port");
  EXPECT_EQ(connects.labels[2].field, "dport");
  EXPECT_TRUE(connects.labels[2].opt_in);
  EXPECT_EQ(connects.labels[2].domain, LabelDomain::folded);
  EXPECT_EQ(kernel_entries(connects), 3u * 3u) << "opt-in labels are not in the kernel's array";

  const MetricDeclaration& latency = parsed->metrics[1];
  EXPECT_EQ(latency.kind, MetricKind::histogram);
  EXPECT_EQ(latency.value_field, "lat_ns");
  EXPECT_EQ(latency.unit_divisor, 1000000000u);
  EXPECT_EQ(latency.bounds, (std::vector<uint64_t>{1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000,
                                                   512000, 1024000}))
      << "log2(1us,1ms): doubling up to the first bound >= 1 ms, in ns";
  EXPECT_EQ(latency.labels[0].domain, LabelDomain::tcp_state);
  EXPECT_EQ(latency.labels[1].domain, LabelDomain::names) << "num has an enum() hint";
  EXPECT_EQ(kernel_entries(latency), 16u * 4u);
  EXPECT_EQ(kernel_words(latency), 11u + 2u);
  ASSERT_EQ(latency.conditions.size(), 2u);
  EXPECT_EQ(latency.conditions[1].field, "err");
  EXPECT_EQ(latency.conditions[1].op, CompareOp::ge);
  EXPECT_EQ(latency.conditions[1].constant, -3);
  EXPECT_EQ(parsed->metrics[2].value_field, "bytes");
}

TEST(MetricDeclarations, BucketRules) {
  const auto bounds = [](const std::string& spec, const std::string& unit) {
    auto parsed = parse("// tcptrace:metric histogram h value=v unit=" + unit + " buckets=" + spec + " help=\"h\"\n");
    EXPECT_TRUE(parsed.ok()) << spec << ": " << parsed.error().message;
    return parsed.ok() ? parsed->metrics.at(0).bounds : std::vector<uint64_t>{};
  };
  EXPECT_EQ(bounds("50us,2.5ms,1s", "us"), (std::vector<uint64_t>{50, 2500, 1000000}));
  EXPECT_EQ(bounds("0.00005,0.0025", "us"), (std::vector<uint64_t>{50, 2500})) << "plain numbers are seconds";
  EXPECT_EQ(bounds("exp(1ms,10,3)", "us"), (std::vector<uint64_t>{1000, 10000, 100000}));
  EXPECT_EQ(bounds("1,10,1000", "bytes"), (std::vector<uint64_t>{1, 10, 1000}));
  EXPECT_EQ(bounds("1.5,2.5", "none"), (std::vector<uint64_t>{1, 2})) << "rounded down to the field's unit";
  auto exported = parse("// tcptrace:metric histogram h value=v unit=ms buckets=1.5s help=\"h\"\n");
  ASSERT_TRUE(exported.ok());
  EXPECT_EQ(exported->metrics[0].exported_bounds(), std::vector<double>{1.5});
}

// Each mistake is one line naming the file and the declaration's line; all
// of them are reported, not only the first.
TEST(MetricDeclarations, EveryMistakeAtItsLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"// tcptrace:metric gauge g help=\"x\"", "p.bpf.c:1: tcptrace:metric takes counter|histogram NAME KEY=VALUE..."},
      {"// tcptrace:metric counter 9x help=\"x\"",
       "p.bpf.c:1: metric name '9x' is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"},
      {"// tcptrace:metric counter c_total", "p.bpf.c:1: metric c_total: help=\"...\" is missing: every metric says what it counts"},
      {"// tcptrace:metric counter c_total help=\"open", "p.bpf.c:1: tcptrace:metric: a quoted value has no closing '\"'"},
      {"// tcptrace:metric counter c_total colour=red help=\"x\"",
       "p.bpf.c:1: metric c_total: unknown key 'colour' (known: labels, value, unit, buckets, when, table, map, help)"},
      {"// tcptrace:metric histogram h map=dist value=v help=\"x\"",
       "p.bpf.c:1: metric h: map= reads the values, unit and buckets from the map: value=, unit=, buckets=, when= and "
       "table= do not go with it"},
      {"// tcptrace:metric histogram h map=dist buckets=1,2 help=\"x\"",
       "p.bpf.c:1: metric h: map= reads the values, unit and buckets from the map: value=, unit=, buckets=, when= and "
       "table= do not go with it"},
      {"// tcptrace:metric counter c_total map=a-b help=\"x\"", "p.bpf.c:1: metric c_total: map='a-b' is not a map name"},
      {"// tcptrace:metric counter c_total labels=a,a help=\"x\"", "p.bpf.c:1: metric c_total: label 'a' appears twice"},
      {"// tcptrace:metric counter c_total labels=le:x help=\"x\"",
       "p.bpf.c:1: metric c_total: label name 'le' is reserved by Prometheus"},
      {"// tcptrace:metric counter c_total when=x~1 help=\"x\"",
       "p.bpf.c:1: metric c_total: when='x~1' is not FIELD OP NUMBER (OP: == != < <= > >=)"},
      {"// tcptrace:metric histogram h value=v help=\"x\"",
       "p.bpf.c:1: metric h: a histogram needs value=FIELD, unit=UNIT and buckets=SPEC"},
      {"// tcptrace:metric histogram h value=v unit=parsecs buckets=1 help=\"x\"",
       "p.bpf.c:1: metric h: unit 'parsecs' is not one of ns, us, ms, s, bytes, none"},
      {"// tcptrace:metric histogram h value=v unit=us buckets=2ms,1ms help=\"x\"",
       "p.bpf.c:1: metric h: buckets=2ms,1ms: bounds must increase (in us, the field's unit)"},
      {"// tcptrace:metric histogram h value=v unit=us buckets=1ms,1.0001ms help=\"x\"",
       "p.bpf.c:1: metric h: buckets=1ms,1.0001ms: bounds must increase (in us, the field's unit)"},
      {"// tcptrace:metric histogram h value=v unit=us buckets=exp(1,10,100) help=\"x\"",
       "p.bpf.c:1: metric h: buckets=exp(1,10,100): exp() gives 100 bounds; at most 64"},
      {"// tcptrace:metric counter c_total unit=us help=\"x\"", "p.bpf.c:1: metric c_total: unit= and buckets= belong to histograms"},
      {"// tcptrace:metric counter c_total labels=a,b,c help=\"x\"",
       "p.bpf.c:1: metric c_total: its labels have 16974593 combinations (257 x 257 x 257); at most 4096 fit a kernel "
       "array (give small fields an enum() hint)"},
      {"int x; // tcptrace:output events event", "p.bpf.c:1: tcptrace:output must be a comment alone on its line (the host replaces that line)"},
      {"// tcptrace:output events", "p.bpf.c:1: tcptrace:output takes TABLE STRUCT (e.g. 'tcptrace:output events event')"},
  };
  for (const auto& [source, message] : cases) {
    auto parsed = parse(source + "\n");
    ASSERT_FALSE(parsed.ok()) << source;
    EXPECT_EQ(parsed.error().exit_code, ExitCode::runtime) << source;
    EXPECT_EQ(parsed.error().message, message) << source;
  }
  auto several = parse("\n// tcptrace:metric counter a_total\n// tcptrace:metric counter a_total help=\"x\"\n"
                       "// tcptrace:metric counter a_total help=\"x\"\n");
  ASSERT_FALSE(several.ok());
  EXPECT_EQ(several.error().message,
            "p.bpf.c:2: metric a_total: help=\"...\" is missing: every metric says what it counts\n"
            "p.bpf.c:4: metric a_total: declared twice");
  auto which = parse("// tcptrace:metric counter a_total help=\"x\"\n// tcptrace:output one event\n"
                     "// tcptrace:output two event\n");
  ASSERT_FALSE(which.ok());
  EXPECT_EQ(which.error().message,
            "p.bpf.c:1: metric a_total: the program has several output tables; say which with table=");
}

// map=: read from one of the program's tables, not from events; labels
// take their domains from the hints as for events (TABLE.field hints name
// the map), with no kernel array to size.
TEST(MetricDeclarations, MapMetricsAreKeptApartFromEventMetrics) {
  const std::string source =
      "// tcptrace:format saddr=ip(family) dist.op=enum(read,write)\n"
      "// tcptrace:metric histogram app_rtt_seconds map=dist labels=family,op,saddr?,a,b,c help=\"RTT\"\n"
      "// tcptrace:metric counter app_hits_total map=hits help=\"Hits\"\n"
      "// tcptrace:metric counter app_events_total help=\"Events\"\n"
      "struct event { u64 v; };\n// tcptrace:output events event\n";
  auto parsed = parse(source);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  ASSERT_EQ(parsed->metrics.size(), 1u);
  EXPECT_EQ(parsed->metrics[0].name, "app_events_total");
  ASSERT_EQ(parsed->map_metrics.size(), 2u);
  const MetricDeclaration& rtt = parsed->map_metrics[0];
  EXPECT_EQ(rtt.kind, MetricKind::histogram);
  EXPECT_EQ(rtt.map, "dist");
  EXPECT_EQ(rtt.line, 2u);
  ASSERT_EQ(rtt.labels.size(), 6u) << "257^3 small values would not fit a kernel array; a map has none";
  EXPECT_EQ(rtt.labels[0].domain, LabelDomain::family);
  EXPECT_EQ(rtt.labels[1].domain, LabelDomain::names) << "the dist.op hint names the map's key member";
  EXPECT_EQ(rtt.labels[1].names, (std::vector<std::string>{"read", "write"}));
  EXPECT_EQ(rtt.labels[2].domain, LabelDomain::folded);
  EXPECT_TRUE(rtt.labels[2].opt_in);
  EXPECT_EQ(rtt.labels[3].domain, LabelDomain::small);
  EXPECT_EQ(parsed->map_metrics[1].map, "hits");
  EXPECT_EQ(parsed->map_metrics[1].kind, MetricKind::counter);

  // One name, once, whichever the source.
  auto twice = parse("// tcptrace:metric counter a_total help=\"x\"\n"
                     "// tcptrace:metric counter a_total map=m help=\"x\"\n");
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().message, "p.bpf.c:2: metric a_total: declared twice");
  // A map metric needs no output table, and names none.
  auto alone = parse("// tcptrace:metric histogram h_seconds map=dist help=\"x\"\n");
  ASSERT_TRUE(alone.ok()) << alone.error().message;
  EXPECT_TRUE(alone->outputs.empty());
  EXPECT_EQ(alone->map_metrics.size(), 1u);
  // Nothing of a map metric reaches the generated counting code.
  const std::string kernel = replace_output_lines(source, *parsed, OutputVariant::kernel_counts, 0);
  EXPECT_NE(kernel.find("tcptrace_m0"), std::string::npos) << kernel;
  EXPECT_EQ(kernel.find("tcptrace_m1"), std::string::npos) << kernel;
}

// The replacement is one line, so every line after it keeps its number,
// and only the variant the run needs is there.
TEST(OutputReplacement, OneLinePerDeclarationInEachVariant) {
  auto parsed = parse(kGood);
  ASSERT_TRUE(parsed.ok());
  const auto lines = [](const std::string& text) { return std::count(text.begin(), text.end(), '\n'); };
  const std::string perf = replace_output_lines(kGood, *parsed, OutputVariant::perf_buffer, 0);
  const std::string ring = replace_output_lines(kGood, *parsed, OutputVariant::ring_buffer, 256);
  const std::string counts = replace_output_lines(kGood, *parsed, OutputVariant::kernel_counts, 0);
  EXPECT_EQ(lines(perf), lines(kGood));
  EXPECT_EQ(lines(counts), lines(kGood));
  EXPECT_EQ(kGood.substr(0, kGood.rfind("// tcptrace:output")), perf.substr(0, kGood.rfind("// tcptrace:output")));
  EXPECT_NE(perf.find("BPF_PERF_OUTPUT(events); "), std::string::npos);
  EXPECT_NE(perf.find("static __always_inline int tcptrace_submit_events(void *ctx, struct event *e)"),
            std::string::npos);
  EXPECT_NE(perf.find("tcptrace_lost"), std::string::npos);
  EXPECT_EQ(perf.find("BPF_RINGBUF_OUTPUT"), std::string::npos);
  EXPECT_NE(ring.find("BPF_RINGBUF_OUTPUT(events, 256); "), std::string::npos);
  EXPECT_EQ(counts.find("BPF_PERF_OUTPUT"), std::string::npos);
  EXPECT_NE(counts.find("BPF_PERCPU_ARRAY(tcptrace_m0, u64, 9); "), std::string::npos);
  EXPECT_NE(counts.find("struct tcptrace_m1_value { u64 words[13]; }; BPF_PERCPU_ARRAY(tcptrace_m1, struct "
                        "tcptrace_m1_value, 64); "),
            std::string::npos);
  EXPECT_NE(counts.find("*tcptrace_c += ((u64)e->bytes);"), std::string::npos) << "counter value=bytes";
  // No output line: the text is the source.
  const std::string plain = "int x;\n";
  EXPECT_EQ(replace_output_lines(plain, ProgramDeclarations{}, OutputVariant::perf_buffer, 0), plain);
}

TEST(LabelSlots, SameRulesAsTheGeneratedCode) {
  MetricLabel names;
  names.domain = LabelDomain::names;
  names.names = {"a", "b"};
  EXPECT_EQ(label_slot(names, 1), 1u);
  EXPECT_EQ(label_slot(names, 2), 2u);
  EXPECT_EQ(label_value(names, 2), "unknown");
  MetricLabel state;
  state.domain = LabelDomain::tcp_state;
  EXPECT_EQ(label_value(state, label_slot(state, 1)), "ESTABLISHED");
  EXPECT_EQ(label_value(state, label_slot(state, 16)), "UNKNOWN");
  MetricLabel family;
  family.domain = LabelDomain::family;
  EXPECT_EQ(label_value(family, label_slot(family, 2)), "ipv4");
  EXPECT_EQ(label_value(family, label_slot(family, 10)), "ipv6");
  EXPECT_EQ(label_value(family, label_slot(family, 6)), "ipv6");
  EXPECT_EQ(label_value(family, label_slot(family, 7)), "other");
  MetricLabel small;  // no hint: its value 0-255
  EXPECT_EQ(label_value(small, label_slot(small, 255)), "255");
  EXPECT_EQ(label_value(small, label_slot(small, 256)), "other");
  MetricCondition c{"x", CompareOp::ge, -3};
  EXPECT_TRUE(condition_holds(c, static_cast<uint64_t>(-2), true));
  EXPECT_FALSE(condition_holds(c, static_cast<uint64_t>(-4), true));
  MetricCondition ne{"x", CompareOp::ne, 0};
  EXPECT_FALSE(condition_holds(ne, 0, false));
  EXPECT_TRUE(condition_holds(ne, 5, false));
}

}  // namespace
}  // namespace tcptrace
