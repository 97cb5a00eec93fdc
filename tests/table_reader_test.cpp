// The program tables' decoding, printing and export (table_reader.h,
// text_output.h), from map descriptions as BCC 0.26 reports them and
// snapshots built here: no root, no BPF.
#include "table_reader.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <cstring>
#include <regex>
#include <sstream>

#include "text_output.h"

namespace tcptrace {
namespace {

// bcc's own print_log2_hist (python3 bcc/table.py, _print_log2_hist of BCC
// 0.26) printed these for the slots the tests give below.
const char* const kBccNarrow = R"(     usecs               : count     distribution
         0 -> 1          : 2        |****************************************|
         2 -> 3          : 2        |****************************************|
         4 -> 7          : 2        |****************************************|
         8 -> 15         : 1        |********************                    |
        16 -> 31         : 0        |                                        |
        32 -> 63         : 0        |                                        |
        64 -> 127        : 1        |********************                    |
       128 -> 255        : 0        |                                        |
       256 -> 511        : 0        |                                        |
       512 -> 1023       : 2        |****************************************|
)";
const char* const kBccWide = R"(               value                         : count     distribution
                   0 -> 1                    : 3        |********            |
                   2 -> 3                    : 0        |                    |
                   4 -> 7                    : 0        |                    |
                   8 -> 15                   : 0        |                    |
                  16 -> 31                   : 1        |**                  |
                  32 -> 63                   : 0        |                    |
                  64 -> 127                  : 0        |                    |
                 128 -> 255                  : 0        |                    |
                 256 -> 511                  : 0        |                    |
                 512 -> 1023                 : 0        |                    |
                1024 -> 2047                 : 0        |                    |
                2048 -> 4095                 : 0        |                    |
                4096 -> 8191                 : 0        |                    |
                8192 -> 16383                : 0        |                    |
               16384 -> 32767                : 0        |                    |
               32768 -> 65535                : 0        |                    |
               65536 -> 131071               : 0        |                    |
              131072 -> 262143               : 0        |                    |
              262144 -> 524287               : 0        |                    |
              524288 -> 1048575              : 0        |                    |
             1048576 -> 2097151              : 0        |                    |
             2097152 -> 4194303              : 0        |                    |
             4194304 -> 8388607              : 0        |                    |
             8388608 -> 16777215             : 0        |                    |
            16777216 -> 33554431             : 0        |                    |
            33554432 -> 67108863             : 0        |                    |
            67108864 -> 134217727            : 0        |                    |
           134217728 -> 268435455            : 0        |                    |
           268435456 -> 536870911            : 0        |                    |
           536870912 -> 1073741823           : 0        |                    |
          1073741824 -> 2147483647           : 0        |                    |
          2147483648 -> 4294967295           : 0        |                    |
          4294967296 -> 8589934591           : 0        |                    |
          8589934592 -> 17179869183          : 0        |                    |
         17179869184 -> 34359738367          : 0        |                    |
         34359738368 -> 68719476735          : 0        |                    |
         68719476736 -> 137438953471         : 0        |                    |
        137438953472 -> 274877906943         : 0        |                    |
        274877906944 -> 549755813887         : 0        |                    |
        549755813888 -> 1099511627775        : 7        |********************|
)";
const char* const kBccPartialBars = R"(     nsecs               : count     distribution
         0 -> 1          : 0        |                                        |
         2 -> 3          : 0        |                                        |
         4 -> 7          : 1000     |****************************************|
         8 -> 15         : 333      |*************                           |
        16 -> 31         : 0        |                                        |
        32 -> 63         : 999      |*************************************** |
)";

TEST(Log2HistogramText, IsBccPrintLog2HistByteForByte) {
  std::vector<uint64_t> narrow = {0, 2, 2, 2, 1, 0, 0, 1, 0, 0, 2};
  narrow.resize(65, 0);
  EXPECT_EQ(log2_histogram_text(narrow, "usecs"), kBccNarrow);
  std::vector<uint64_t> wide(65, 0);
  wide[1] = 3;
  wide[40] = 7;
  wide[5] = 1;
  EXPECT_EQ(log2_histogram_text(wide, "value"), kBccWide);
  std::vector<uint64_t> bars(65, 0);
  bars[3] = 1000;
  bars[4] = 333;
  bars[6] = 999;
  EXPECT_EQ(log2_histogram_text(bars, "nsecs"), kBccPartialBars);
}

TEST(Log2HistogramText, NothingAboveSlotZeroPrintsNothing) {
  EXPECT_EQ(log2_histogram_text({}, "usecs"), "");
  EXPECT_EQ(log2_histogram_text({5}, "usecs"), "");
}

TEST(Log2Slots, BoundsAreBpfLog2lBuckets) {
  // bpf_log2l(0) and bpf_log2l(1) are both 1; v in [2^(i-1), 2^i - 1] is i.
  EXPECT_EQ(log2_slot_low(0), 0u);
  EXPECT_EQ(log2_slot_high(0), 0u);
  EXPECT_EQ(log2_slot_low(1), 0u);
  EXPECT_EQ(log2_slot_high(1), 1u);
  EXPECT_EQ(log2_slot_low(2), 2u);
  EXPECT_EQ(log2_slot_high(2), 3u);
  EXPECT_EQ(log2_slot_low(10), 512u);
  EXPECT_EQ(log2_slot_high(10), 1023u);
  EXPECT_EQ(log2_slot_low(64), uint64_t{1} << 63);
  EXPECT_EQ(log2_slot_high(64), UINT64_MAX);
}

// Map descriptions as BCC 0.26 reports them (bpf_table_key_desc and
// bpf_table_leaf_desc) for the declarations in the comments.
bcc::DataTable map(std::string name, int type, std::string key, std::string value, size_t key_size,
                   size_t value_size, size_t entries) {
  bcc::DataTable t;
  t.name = std::move(name);
  t.map_type = type;
  t.key_description = std::move(key);
  t.value_description = std::move(value);
  t.key_size = key_size;
  t.value_size = value_size;
  t.max_entries = entries;
  return t;
}

constexpr int kHash = 1, kArray = 2, kPercpuHash = 5, kPercpuArray = 6, kStackTrace = 7;

std::vector<bcc::DataTable> program_maps() {
  return {
      // BPF_HISTOGRAM(dist);
      map("dist", kArray, "\"int\"", "\"unsigned long long\"", 4, 8, 64),
      // BPF_HISTOGRAM(by_op, struct op_slot { u32 op; u64 slot; });
      map("by_op", kHash, R"(["op_slot", [["op","unsigned int"], ["__pad_1","char",[4]], ["slot","unsigned long long"] ], "struct_packed"])",
          "\"unsigned long long\"", 16, 8, 64),
      // BPF_HASH(counts, u32, u64);
      map("counts", kHash, "\"unsigned int\"", "\"unsigned long long\"", 4, 8, 10240),
      // BPF_PERCPU_HASH(deltas, s16, long);
      map("deltas", kPercpuHash, "\"short\"", "\"long\"", 2, 8, 10240),
      // BPF_PERCPU_ARRAY(per_cpu, u64, 4);
      map("per_cpu", kPercpuArray, "\"int\"", "\"unsigned long long\"", 4, 8, 4),
      // BPF_HASH(sv, u32, struct v_t { u64 a; u32 b; });
      map("sv", kHash, "\"unsigned int\"",
          R"(["v_t", [["a","unsigned long long"], ["b","unsigned int"], ["__pad_end","char",[4]] ], "struct_packed"])", 4,
          16, 10240),
      // BPF_STACK_TRACE(stacks, 128);
      map("stacks", kStackTrace, "\"int\"", "\"unsigned long long\"", 4, 8, 128),
      // The host's own, and a seeded map.
      map("tcptrace_lost", kPercpuArray, "\"int\"", "\"unsigned long long\"", 4, 8, 1),
      map("owners", kHash, "\"unsigned int\"", "\"unsigned long long\"", 4, 8, 16),
  };
}

ProgramAnnotations annotations_of(const std::string& source) {
  auto parsed = parse_program_annotations(source);
  EXPECT_TRUE(parsed) << parsed.error().message;
  return parsed ? *parsed : ProgramAnnotations{};
}

const char* const kDeclarations =
    "BPF_HISTOGRAM(dist);\nBPF_HISTOGRAM(by_op, struct op_slot);\n// tcptrace:seed tcp-listeners=owners\n";

std::vector<std::string> names(const std::vector<TableSpec>& specs) {
  std::vector<std::string> out;
  for (const auto& spec : specs) out.push_back(spec.name);
  return out;
}

TEST(SelectTables, WithoutAListEveryHistogramAndIntegerHashOrArray) {
  auto specs = select_tables(program_maps(), annotations_of(kDeclarations));
  ASSERT_TRUE(specs) << specs.error().message;
  // Not sv (struct values), stacks (not a hash or array), tcptrace_lost
  // (the host's), owners (seeded).
  EXPECT_EQ(names(*specs), (std::vector<std::string>{"dist", "by_op", "counts", "deltas", "per_cpu"}));
  EXPECT_EQ((*specs)[0].shape, TableShape::histogram);
  EXPECT_FALSE((*specs)[0].slot);
  EXPECT_EQ((*specs)[1].shape, TableShape::histogram);
  ASSERT_TRUE((*specs)[1].slot);
  EXPECT_EQ((*specs)[1].slot->offset, 8u);
  EXPECT_EQ((*specs)[2].shape, TableShape::counts);
  EXPECT_TRUE((*specs)[3].value_signed);
  // Found, not listed: histograms are cleared, counts are not (they may be
  // the program's state).
  EXPECT_TRUE(clears_after_read((*specs)[0], false));
  EXPECT_FALSE(clears_after_read((*specs)[2], false));
  EXPECT_FALSE(clears_after_read((*specs)[0], true));
}

TEST(SelectTables, AListReadsOnlyThoseAndClearsThem) {
  auto specs = select_tables(program_maps(),
                             annotations_of(std::string(kDeclarations) + "// tcptrace:tables counts dist=us\n"));
  ASSERT_TRUE(specs) << specs.error().message;
  EXPECT_EQ(names(*specs), (std::vector<std::string>{"dist", "counts"}));
  EXPECT_EQ((*specs)[0].unit, TableUnit::us);
  EXPECT_TRUE(clears_after_read((*specs)[1], false));
  EXPECT_FALSE(clears_after_read((*specs)[1], true));
}

TEST(SelectTables, AListedMapThatCannotBeReadIsAnError) {
  const struct {
    const char* line;
    const char* message;
  } cases[] = {
      {"// tcptrace:tables nosuch", "tcptrace:tables nosuch: the program declares no such map"},
      {"// tcptrace:tables sv", "tcptrace:tables sv: its values are not integers"},
      {"// tcptrace:tables stacks", "tcptrace:tables stacks: it is a map of type 7"},
      {"// tcptrace:tables counts=us", "tcptrace:tables counts: a unit applies to a histogram"},
      {"// tcptrace:tables owners", "tcptrace:tables owners: the host fills this map (tcptrace:seed)"},
  };
  for (const auto& c : cases) {
    auto specs = select_tables(program_maps(), annotations_of(std::string(kDeclarations) + c.line + "\n"));
    ASSERT_FALSE(specs) << c.line;
    EXPECT_NE(specs.error().message.find(c.message), std::string::npos) << specs.error().message;
  }
}

// A map listed with "?" may be missing (a program that declares it only
// under a macro); when it is there, it is a listed table like any other.
TEST(SelectTables, AnOptionalMapMayBeMissing) {
  auto specs = select_tables(program_maps(), annotations_of(std::string(kDeclarations) +
                                                            "// tcptrace:tables nosuch? counts? dist=us?\n"));
  ASSERT_TRUE(specs) << specs.error().message;
  EXPECT_EQ(names(*specs), (std::vector<std::string>{"dist", "counts"}));
  EXPECT_EQ((*specs)[0].unit, TableUnit::us);
  EXPECT_TRUE((*specs)[1].listed);
  EXPECT_TRUE(clears_after_read((*specs)[1], false));
  // Only optional maps listed, none there: no table at all, and the maps
  // that are there are not read either (the list says which to read).
  auto none = select_tables(program_maps(), annotations_of(std::string(kDeclarations) + "// tcptrace:tables nosuch?\n"));
  ASSERT_TRUE(none) << none.error().message;
  EXPECT_TRUE(none->empty());
  // An optional map that is there but cannot be read is still an error.
  auto bad = select_tables(program_maps(), annotations_of(std::string(kDeclarations) + "// tcptrace:tables sv?\n"));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("tcptrace:tables sv: its values are not integers"), std::string::npos)
      << bad.error().message;
}

TEST(TablesAnnotation, ParsesUnitsAndRejectsWhatItCannotMean) {
  auto ok = parse_program_annotations("// tcptrace:tables a b=ns c=bytes\n/* tcptrace:tables d */\n");
  ASSERT_TRUE(ok) << ok.error().message;
  ASSERT_EQ(ok->tables.size(), 4u);
  EXPECT_EQ(ok->tables[1].unit, TableUnit::ns);
  EXPECT_EQ(ok->tables[2].unit, TableUnit::bytes);
  EXPECT_EQ(ok->tables[3].map, "d");
  EXPECT_FALSE(ok->tables[0].optional);
  auto optional = parse_program_annotations("// tcptrace:tables a? b=us?\n");
  ASSERT_TRUE(optional) << optional.error().message;
  ASSERT_EQ(optional->tables.size(), 2u);
  EXPECT_EQ(optional->tables[0].map, "a");
  EXPECT_TRUE(optional->tables[0].optional);
  EXPECT_EQ(optional->tables[1].map, "b");
  EXPECT_EQ(optional->tables[1].unit, TableUnit::us);
  EXPECT_TRUE(optional->tables[1].optional);
  for (const char* bad : {"// tcptrace:tables a=furlongs", "// tcptrace:tables a a", "// tcptrace:tables 9a",
                          "// tcptrace:tables tcptrace_lost", "// tcptrace:tables ?", "// tcptrace:tables a?=us",
                          "// tcptrace:tables a a?"}) {
    auto parsed = parse_program_annotations(bad);
    ASSERT_FALSE(parsed) << bad;
    EXPECT_NE(parsed.error().message.find("line 1: tcptrace:tables"), std::string::npos) << parsed.error().message;
  }
}

TEST(TablesAnnotation, HistogramsAreFoundInTheSource) {
  EXPECT_EQ(histogram_declarations("BPF_HISTOGRAM(a);\nBPF_HISTOGRAM( b , struct k, 128);\n"
                                   "BPF_TABLE(\"histogram\", int, u64, c, 64);\nBPF_TABLE(\"hash\", int, u64, d, 64);\n"
                                   "BPF_HISTOGRAM(a);"),
            (std::vector<std::string>{"a", "b", "c"}));
}

// A snapshot as bcc::read_map returns it.
template <class K, class V>
bcc::MapSnapshot snapshot(const std::vector<std::pair<K, std::vector<V>>>& entries, size_t cpus) {
  bcc::MapSnapshot s;
  s.key_size = sizeof(K);
  s.cpus = cpus;
  const size_t per_cpu = cpus > 1 ? (sizeof(V) + 7) / 8 * 8 : sizeof(V);
  s.value_stride = per_cpu * cpus;
  for (const auto& [key, values] : entries) {
    const auto* k = reinterpret_cast<const unsigned char*>(&key);
    s.keys.insert(s.keys.end(), k, k + sizeof(K));
    std::vector<unsigned char> value(s.value_stride, 0);
    for (size_t cpu = 0; cpu < cpus; ++cpu) std::memcpy(value.data() + cpu * per_cpu, &values.at(cpu), sizeof(V));
    s.values.insert(s.values.end(), value.begin(), value.end());
    ++s.entries;
  }
  return s;
}

TableView view_of(const std::string& name, const std::string& annotations, std::vector<FormatHint> hints = {}) {
  static const WallClock clock(0);
  auto specs = select_tables(program_maps(), annotations_of(std::string(kDeclarations) + annotations));
  EXPECT_TRUE(specs);
  for (const TableSpec& spec : *specs) {
    if (spec.name != name) continue;
    auto view = TableView::make(spec, hints, clock);
    EXPECT_TRUE(view) << view.error().message;
    return std::move(view).value();
  }
  ADD_FAILURE() << "no table " << name;
  std::abort();
}

TEST(TableJson, HistogramFromTheFirstToTheLastNonEmptySlot) {
  const TableView view = view_of("dist", "// tcptrace:tables dist=us\n");
  std::vector<std::pair<int32_t, std::vector<uint64_t>>> slots;
  for (int32_t i = 0; i < 64; ++i) slots.push_back({i, {0}});
  slots[2].second = {3};
  slots[5].second = {1};
  const TableCounts counts = view.summarize(snapshot(slots, 1));
  std::string out;
  view.append_json(out, counts, "\"T\"", 42);
  EXPECT_EQ(out,
            R"({"event":"dist","time":"T","ts_us":42,"unit":"us","buckets":[{"low":2,"high":3,"count":3},)"
            R"({"low":4,"high":7,"count":0},{"low":8,"high":15,"count":0},{"low":16,"high":31,"count":1}]})"
            "\n");
  out.clear();
  view.append_json(out, view.summarize(snapshot(std::vector<std::pair<int32_t, std::vector<uint64_t>>>{}, 1)), "\"T\"", 1);
  EXPECT_EQ(out, R"({"event":"dist","time":"T","ts_us":1,"unit":"us","buckets":[]})" "\n");
}

struct OpSlot {
  uint32_t op;
  uint32_t pad;
  uint64_t slot;
};

TEST(TableJson, KeyedHistogramGroupsBySlotlessKeyWithHints) {
  FormatHint hint;
  hint.field = "op";
  hint.format = FieldFormat::enumeration;
  hint.arguments = {"read", "write"};
  const TableView view = view_of("by_op", "", {hint});
  const TableCounts counts = view.summarize(snapshot<OpSlot, uint64_t>(
      {{{1, 0, 3}, {2}}, {{0, 0, 1}, {5}}, {{1, 0, 1}, {1}}}, 1));
  std::string out;
  view.append_json(out, counts, "\"T\"", 7);
  EXPECT_EQ(out, R"({"event":"by_op","time":"T","ts_us":7,"histograms":[)"
                 R"({"key":{"op":"read"},"buckets":[{"low":0,"high":1,"count":5}]},)"
                 R"({"key":{"op":"write"},"buckets":[{"low":0,"high":1,"count":1},{"low":2,"high":3,"count":0},{"low":4,"high":7,"count":2}]}]})"
                 "\n");
}

TEST(TableJson, CountsSumTheCpusAndSortLikeBccTools) {
  // A per-CPU hash of signed values: sums over CPUs, largest first.
  const TableView deltas = view_of("deltas", "");
  std::string out;
  deltas.append_json(out, deltas.summarize(snapshot<int16_t, int64_t>({{-3, {1, 1}}, {7, {-5, 2}}, {9, {10, 0}}}, 2)),
                     "\"T\"", 1);
  EXPECT_EQ(out, R"({"event":"deltas","time":"T","ts_us":1,"entries":[{"key":9,"value":10},{"key":-3,"value":2},)"
                 R"({"key":7,"value":-3}]})"
                 "\n");
  // A per-CPU array: by index, empty entries left out.
  const TableView per_cpu = view_of("per_cpu", "");
  out.clear();
  per_cpu.append_json(
      out, per_cpu.summarize(snapshot<int32_t, uint64_t>({{0, {0, 0}}, {1, {2, 1}}, {2, {0, 0}}, {3, {0, 4}}}, 2)),
      "\"T\"", 1);
  EXPECT_EQ(out, R"({"event":"per_cpu","time":"T","ts_us":1,"entries":[{"key":1,"value":3},{"key":3,"value":4}]})"
                 "\n");
}

TEST(TableText, CountsInColumnsAndHistogramsAsBcc) {
  FormatHint hint;
  hint.table = "counts";
  hint.field = "key";
  hint.format = FieldFormat::hex;
  const TableView counts = view_of("counts", "", {hint});
  std::string out;
  counts.append_text(out, counts.summarize(snapshot<uint32_t, uint64_t>({{255, {12}}, {1, {3}}}, 1)));
  EXPECT_EQ(out, "counts:\nKEY  VALUE\n0xff    12\n0x1      3\n\n");

  const TableView dist = view_of("dist", "// tcptrace:tables dist=ns\n");
  std::vector<std::pair<int32_t, std::vector<uint64_t>>> slots;
  for (int32_t i = 0; i < 64; ++i) slots.push_back({i, {0}});
  slots[3].second = {1000};
  slots[4].second = {333};
  slots[6].second = {999};
  out.clear();
  dist.append_text(out, dist.summarize(snapshot(slots, 1)));
  EXPECT_EQ(out, std::string("dist:\n") + kBccPartialBars + "\n");
}

std::string exposition(prometheus::Registry& registry) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry.Collect());
  return out.str();
}

TEST(TableMetricsTest, Log2HistogramInSecondsWithRunningTotals) {
  auto registry = std::make_shared<prometheus::Registry>();
  TableMetrics metrics(registry);
  const TableView view = view_of("dist", "// tcptrace:tables dist=us\n");
  std::vector<std::pair<int32_t, std::vector<uint64_t>>> slots;
  for (int32_t i = 0; i < 64; ++i) slots.push_back({i, {0}});
  slots[1].second = {2};   // 0..1 us
  slots[11].second = {1};  // 1024..2047 us
  // Two reads, each of a cleared map: the second adds to the first.
  metrics.update(view, view.summarize(snapshot(slots, 1)), true, false, "p.bpf.c");
  slots[11].second = {4};
  metrics.update(view, view.summarize(snapshot(slots, 1)), true, false, "p.bpf.c");
  const std::string text = exposition(*registry);
  EXPECT_NE(text.find("# HELP tcptrace_table_dist_seconds Log2 histogram from the map 'dist' (BPF_HISTOGRAM) of p.bpf.c"),
            std::string::npos) << text;
  EXPECT_NE(text.find("tcptrace_table_dist_seconds_bucket{le=\"0\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tcptrace_table_dist_seconds_bucket{le=\"1e-06\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tcptrace_table_dist_seconds_bucket{le=\"0.001023\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tcptrace_table_dist_seconds_bucket{le=\"0.002047\"} 9\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tcptrace_table_dist_seconds_count 9\n"), std::string::npos) << text;
  // Not cleared: only what grew since the last read is added.
  auto registry2 = std::make_shared<prometheus::Registry>();
  TableMetrics uncleared(registry2);
  uncleared.update(view, view.summarize(snapshot(slots, 1)), false, false, "p.bpf.c");
  uncleared.update(view, view.summarize(snapshot(slots, 1)), false, false, "p.bpf.c");
  EXPECT_NE(exposition(*registry2).find("tcptrace_table_dist_seconds_count 6\n"), std::string::npos);
}

TEST(TableMetricsTest, CountsAsCountersOrGaugesFoldedBeyondTheLimit) {
  auto registry = std::make_shared<prometheus::Registry>();
  TableMetrics metrics(registry);
  const TableView counts = view_of("counts", "// tcptrace:tables counts\n");
  std::vector<std::pair<uint32_t, std::vector<uint64_t>>> entries;
  for (uint32_t k = 0; k < kTableLabelLimit + 5; ++k) entries.push_back({k, {1}});
  metrics.update(counts, counts.summarize(snapshot(entries, 1)), true, true, "p.bpf.c");
  metrics.update(counts, counts.summarize(snapshot(entries, 1)), true, true, "p.bpf.c");
  const std::string text = exposition(*registry);
  EXPECT_NE(text.find("# TYPE tcptrace_table_counts_total counter"), std::string::npos) << text;
  EXPECT_NE(text.find("tcptrace_table_counts_total{key=\"7\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("tcptrace_table_counts_total{key=\"other\"} 10\n"), std::string::npos) << text;
  size_t series = 0;
  for (size_t at = text.find("\ntcptrace_table_counts_total{"); at != std::string::npos;
       at = text.find("\ntcptrace_table_counts_total{", at + 1)) {
    ++series;
  }
  EXPECT_EQ(series, kTableLabelLimit + 1);

  auto registry2 = std::make_shared<prometheus::Registry>();
  TableMetrics gauges(registry2);
  const TableView found = view_of("counts", "");
  gauges.update(found, found.summarize(snapshot<uint32_t, uint64_t>({{3, {9}}}, 1)), false, false, "p.bpf.c");
  EXPECT_NE(exposition(*registry2).find("tcptrace_table_counts{key=\"3\"} 9\n"), std::string::npos);
}

// tcptrace:metric ... map=MAP: a program's table exported under the name,
// help and labels it declares (an ebpf_exporter-style metric on a map).
struct AddrSlot {
  uint16_t family;
  uint8_t saddr[16];
  uint8_t pad[6];
  uint64_t slot;
};
static_assert(sizeof(AddrSlot) == 32);

const char* const kMapMetricsSource =
    "BPF_HISTOGRAM(rtt, struct k, 1024);\n"
    "// tcptrace:tables rtt=us hits\n"
    "// tcptrace:format saddr=ip(family) rtt.saddr=optional\n";

std::vector<bcc::DataTable> map_metric_maps() {
  return {
      // BPF_HISTOGRAM(rtt, struct k { u16 family; u8 saddr[16]; u64 slot; }, 1024);
      map("rtt", kHash,
          R"(["k", [["family","unsigned short"], ["saddr","unsigned char",[16]], ["__pad_1","char",[6]], ["slot","unsigned long long"] ], "struct_packed"])",
          "\"unsigned long long\"", 32, 8, 1024),
      // BPF_HASH(hits, u32, u64); BPF_HASH(state, u32, u64);
      map("hits", kHash, "\"unsigned int\"", "\"unsigned long long\"", 4, 8, 64),
      map("state", kHash, "\"unsigned int\"", "\"unsigned long long\"", 4, 8, 64),
  };
}

// The program's tables as the loader builds them, with its map= metrics
// bound for the --metrics-label names in `asked`.
struct MapMetricProgram {
  std::vector<TableView> views;
  Status bound;
};

MapMetricProgram map_metric_program(const std::string& declarations, const std::vector<std::string>& asked) {
  static const WallClock clock(0);
  const std::string source = kMapMetricsSource + declarations;
  auto hints = parse_format_hints(source);
  EXPECT_TRUE(hints) << hints.error().message;
  auto parsed = parse_program_declarations(source, "p.bpf.c", *hints);
  EXPECT_TRUE(parsed) << parsed.error().message;
  auto specs = select_tables(map_metric_maps(), annotations_of(source));
  EXPECT_TRUE(specs) << specs.error().message;
  auto views = make_table_views(*specs, *hints, clock);
  EXPECT_TRUE(views) << views.error().message;
  MapMetricProgram program{std::move(views).value(), {}};
  program.bound = bind_table_metrics(parsed->map_metrics, {"rtt", "hits", "state"}, program.views, asked, "p.bpf.c");
  return program;
}

const TableView& view_named(const MapMetricProgram& program, const std::string& name) {
  for (const TableView& view : program.views) {
    if (view.spec().name == name) return view;
  }
  ADD_FAILURE() << "no table " << name;
  std::abort();
}

AddrSlot addr_slot(uint16_t family, std::vector<uint8_t> addr, uint64_t slot) {
  AddrSlot k{};
  k.family = family;
  std::copy(addr.begin(), addr.end(), k.saddr);
  k.slot = slot;
  return k;
}

bcc::MapSnapshot rtt_snapshot() {
  return snapshot<AddrSlot, uint64_t>({{addr_slot(4, {10, 0, 0, 1}, 10), {3}},
                                       {addr_slot(4, {10, 0, 0, 2}, 10), {1}},
                                       {addr_slot(4, {10, 0, 0, 3}, 11), {2}},
                                       {addr_slot(4, {}, 11), {7}},  // folded by the program: null
                                       {addr_slot(6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 10), {1}},
                                       {addr_slot(6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 11), {1}}},
                                      1);
}

TEST(TableMetricsTest, DeclaredHistogramSumsOverMembersThatAreNotLabels) {
  const MapMetricProgram program = map_metric_program(
      "// tcptrace:metric histogram app_rtt_seconds map=rtt labels=family,saddr? help=\"RTT by family\"\n", {});
  ASSERT_TRUE(program.bound) << program.bound.error().message;
  const TableView& rtt = view_named(program, "rtt");
  ASSERT_NE(rtt.metric(), nullptr);
  ASSERT_EQ(rtt.metric()->labels.size(), 1u) << "saddr is opt-in and not asked for";
  auto registry = std::make_shared<prometheus::Registry>();
  TableMetrics metrics(registry);
  // Before any sample, both named families are there at 0.
  metrics.update(rtt, rtt.summarize(snapshot(std::vector<std::pair<AddrSlot, std::vector<uint64_t>>>{}, 1)), true,
                 true, "p.bpf.c");
  std::string text = exposition(*registry);
  EXPECT_NE(text.find("# HELP app_rtt_seconds RTT by family\n# TYPE app_rtt_seconds histogram\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_count{family=\"ipv4\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_count{family=\"ipv6\"} 0\n"), std::string::npos) << text;
  metrics.update(rtt, rtt.summarize(rtt_snapshot()), true, true, "p.bpf.c");
  metrics.update(rtt, rtt.summarize(rtt_snapshot()), true, true, "p.bpf.c");
  text = exposition(*registry);
  // Slot 10 holds 512..1023 us, slot 11 1024..2047 us: twice (3+1, 2+7).
  EXPECT_NE(text.find("app_rtt_seconds_bucket{family=\"ipv4\",le=\"0.000511\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_bucket{family=\"ipv4\",le=\"0.001023\"} 8\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_bucket{family=\"ipv4\",le=\"0.002047\"} 26\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_count{family=\"ipv4\"} 26\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_bucket{family=\"ipv6\",le=\"0.001023\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_count{family=\"ipv6\"} 4\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("tcptrace_table_rtt"), std::string::npos) << "the declared metric replaces the table's own";
  EXPECT_EQ(text.find("family=\"other\""), std::string::npos) << text;
}

TEST(TableMetricsTest, DeclaredOptInLabelKeepsTheFirstValuesAndFoldsTheRest) {
  const MapMetricProgram program = map_metric_program(
      "// tcptrace:metric histogram app_rtt_seconds map=rtt labels=family,saddr? help=\"RTT\"\n"
      "// tcptrace:metric counter app_hits_total map=hits labels=port:key? help=\"Hits\"\n",
      {"saddr", "port"});
  ASSERT_TRUE(program.bound) << program.bound.error().message;
  auto registry = std::make_shared<prometheus::Registry>();
  TableMetrics metrics(registry, /*label_limit=*/2);
  const TableView& rtt = view_named(program, "rtt");
  metrics.update(rtt, rtt.summarize(rtt_snapshot()), true, true, "p.bpf.c");
  const TableView& hits = view_named(program, "hits");
  const auto counts = snapshot<uint32_t, uint64_t>({{443, {2}}, {80, {5}}, {8080, {1}}}, 1);
  metrics.update(hits, hits.summarize(counts), true, true, "p.bpf.c");
  metrics.update(hits, hits.summarize(counts), true, true, "p.bpf.c");
  const std::string text = exposition(*registry);
  // Keys are read in order ({"family":4,"saddr":"10.0.0.1"} first): the
  // first two addresses keep theirs; a later one, the null the program
  // folded, and ::1 are "other".
  EXPECT_NE(text.find("app_rtt_seconds_count{family=\"ipv4\",saddr=\"10.0.0.1\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_count{family=\"ipv4\",saddr=\"10.0.0.2\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_count{family=\"ipv4\",saddr=\"other\"} 9\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_rtt_seconds_count{family=\"ipv6\",saddr=\"other\"} 2\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("10.0.0.3"), std::string::npos) << text;
  // Counts largest first: 80 and 443 keep theirs; running totals over two
  // cleared reads.
  EXPECT_NE(text.find("# TYPE app_hits_total counter"), std::string::npos) << text;
  EXPECT_NE(text.find("app_hits_total{port=\"80\"} 10\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_hits_total{port=\"443\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("app_hits_total{port=\"other\"} 2\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("tcptrace_table_"), std::string::npos) << text;
}

TEST(TableMetricsTest, DeclaredMetricsThatCannotBindNameTheirLine) {
  const struct {
    std::string line;
    std::vector<std::string> asked;
    std::string message;
  } cases[] = {
      {"// tcptrace:metric histogram h_seconds map=nosuch help=\"x\"", {},
       "p.bpf.c:4: metric h_seconds: map=nosuch: the program declares no such map"},
      {"// tcptrace:metric counter s_total map=state help=\"x\"", {},
       "p.bpf.c:4: metric s_total: map=state: the host does not read this map (list it in the tcptrace:tables line; "
       "only histograms and maps of integer counts are read)"},
      {"// tcptrace:metric histogram h_seconds map=hits help=\"x\"", {},
       "p.bpf.c:4: metric h_seconds: map=hits: a histogram is read from a log2 histogram (BPF_HISTOGRAM); this map "
       "holds counts (declare a counter)"},
      {"// tcptrace:metric counter r_total map=rtt help=\"x\"", {},
       "p.bpf.c:4: metric r_total: map=rtt: this map is a log2 histogram (BPF_HISTOGRAM); declare a histogram"},
      {"// tcptrace:metric histogram h_seconds map=rtt labels=daddr help=\"x\"", {},
       "p.bpf.c:4: metric h_seconds: the key of map 'rtt' has no member 'daddr' (it has family, saddr)"},
      {"// tcptrace:metric histogram h_seconds map=rtt labels=daddr? help=\"x\"", {"daddr"},
       "p.bpf.c:4: metric h_seconds: --metrics-label daddr: the key of map 'rtt' has no member 'daddr' (it has "
       "family, saddr)"},
      {"// tcptrace:metric histogram h_seconds map=rtt labels=saddr help=\"x\"", {},
       "p.bpf.c:4: metric h_seconds: label saddr: key member 'saddr' of map 'rtt' is not an integer (only an opt-in "
       "label, folded by the host, may take other values)"},
  };
  for (const auto& c : cases) {
    const MapMetricProgram program = map_metric_program(c.line + "\n", c.asked);
    ASSERT_FALSE(program.bound) << c.line;
    EXPECT_EQ(program.bound.error().message, c.message);
  }
  // An opt-in label not asked for is not bound: its member may be missing.
  EXPECT_TRUE(map_metric_program("// tcptrace:metric histogram h_seconds map=rtt labels=daddr? help=\"x\"\n", {}).bound);
}

TEST(TextColumnsTest, HeaderOnceAndFixedWidthsByType) {
  auto layout = parse_event_layout({"ts_us#u64", "pid#u32", "comm#char[16]", "saddr#u32", "state#u8", "ret#s32"});
  ASSERT_TRUE(layout);
  auto hints = parse_format_hints("// tcptrace:format saddr=ip(family) state=tcp_state");
  ASSERT_TRUE(hints);
  const TextColumns columns = TextColumns::make(*layout, *hints, "events", false, true);
  EXPECT_EQ(columns.header(),
            "TIME                       TS_US        PID COMM             SADDR           STATE                RET\n");
  std::string row;
  columns.append_row(row, R"({"time":"2026-11-21T23:46:18.916800Z","ts_us":644561124,"pid":4575,"comm":"curl",)"
                          R"("saddr":"127.0.0.1","state":"ESTABLISHED","ret":-111})");
  EXPECT_EQ(row, "23:46:18.916800        644561124       4575 curl             127.0.0.1       ESTABLISHED         -111\n");
  EXPECT_EQ(columns.header().size(), row.size());
}

}  // namespace
}  // namespace tcptrace
