// The reports of declared metrics (metrics_report.h): JSON lines and bcc's
// histogram drawing, what grew since the previous report or the totals.
#include "metrics_report.h"

#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

namespace tcptrace {
namespace {

// A program declaring a counter with a label and a histogram in us.
const char* kSource =
    "// tcptrace:format op=enum(read,write)\n"
    "// tcptrace:metric counter ops_total labels=op help=\"ops\"\n"
    "// tcptrace:metric histogram op_seconds value=us unit=us buckets=10us,100us,1ms labels=op when=us!=0 help=\"t\"\n";

struct Fixture {
  EventLayout layout;
  Metrics metrics{MetricsConfig{}};
  Fixture() {
    auto parsed = parse_event_layout({"us#u64", "op#u8"});
    EXPECT_TRUE(parsed.ok());
    layout = std::move(parsed).value();
    auto hints = parse_format_hints(kSource);
    auto declared = parse_program_declarations(kSource, "p.bpf.c", *hints);
    EXPECT_TRUE(declared.ok()) << declared.error().message;
    auto bound = bind_metric_fields(declared->metrics, {"events"}, {&layout}, "p.bpf.c");
    EXPECT_TRUE(bound.ok()) << bound.error().message;
    metrics.bind(std::move(bound).value());
  }
  void observe(uint64_t us, uint8_t op) {
    unsigned char bytes[16] = {};
    std::memcpy(bytes + layout.find("us")->offset, &us, sizeof us);
    bytes[layout.find("op")->offset] = op;
    metrics.observe(0, bytes);
  }
};

TEST(MetricsReport, TextDrawsHistogramsAsBccDoes) {
  Fixture f;
  const WallClock clock(0);
  MetricsReport report(f.metrics, /*text=*/true, /*accumulate=*/false, clock);
  for (uint64_t us : {5, 10, 11, 100, 2000, 0}) f.observe(us, 0);
  f.observe(50, 1);
  EXPECT_EQ(report.render(),
            "ops_total{op=\"read\"} 6\n"
            "ops_total{op=\"write\"} 1\n"
            "\n"
            "op_seconds {op=\"read\"}\n"
            "     usecs               : count     distribution\n"
            "         0 -> 10         : 2        |****************************************|\n"
            "        11 -> 100        : 2        |****************************************|\n"
            "       101 -> 1000       : 0        |                                        |\n"
            "      1001 ->            : 1        |********************                    |\n"
            "\n"
            "op_seconds {op=\"write\"}\n"
            "     usecs               : count     distribution\n"
            "         0 -> 10         : 0        |                                        |\n"
            "        11 -> 100        : 1        |****************************************|\n");
  // The next report shows what grew since: one more read of 20 us.
  f.observe(20, 0);
  EXPECT_EQ(report.render(),
            "ops_total{op=\"read\"} 1\n"
            "\n"
            "op_seconds {op=\"read\"}\n"
            "     usecs               : count     distribution\n"
            "         0 -> 10         : 0        |                                        |\n"
            "        11 -> 100        : 1        |****************************************|\n");
  EXPECT_EQ(report.render(), "") << "nothing grew";
}

TEST(MetricsReport, JsonLinesWithTotalsWhenAccumulating) {
  Fixture f;
  const WallClock clock(0);
  MetricsReport report(f.metrics, /*text=*/false, /*accumulate=*/true, clock);
  f.observe(10, 1);
  f.observe(5000, 1);
  report.render();
  f.observe(10, 1);
  std::vector<nlohmann::json> lines;
  std::istringstream text(report.render());
  for (std::string line; std::getline(text, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["event"], "ops_total");
  EXPECT_TRUE(lines[0]["time"].is_string());
  EXPECT_EQ(lines[0]["series"], nlohmann::json::parse(R"([{"labels":{"op":"write"},"value":3}])"));
  EXPECT_EQ(lines[1]["event"], "op_seconds");
  EXPECT_EQ(lines[1]["unit"], "us");
  EXPECT_EQ(lines[1]["series"][0]["labels"], nlohmann::json::parse(R"({"op":"write"})"));
  EXPECT_EQ(lines[1]["series"][0]["count"], 3);
  EXPECT_DOUBLE_EQ(lines[1]["series"][0]["sum"].get<double>(), 0.00502);
  EXPECT_EQ(lines[1]["series"][0]["buckets"], nlohmann::json::parse(R"([
      {"low":0,"high":10,"count":2},{"low":11,"high":100,"count":0},
      {"low":101,"high":1000,"count":0},{"low":1001,"high":null,"count":1}])"));
}

}  // namespace
}  // namespace tcptrace
