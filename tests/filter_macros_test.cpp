#include "filter_macros.h"
#include "port_set.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace tcptrace {
namespace {

namespace fs = std::filesystem;

::testing::AssertionResult Contains(const std::string& text, const std::string& needle) {
  if (text.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << needle << "' not found in: " << text;
}

PortSet ports(std::string_view text) {
  auto set = PortSet::parse("--sport", text);
  EXPECT_TRUE(set.ok()) << text << ": " << set.error().message;
  return set.ok() ? std::move(set).value() : PortSet{};
}

// "1,3,5,...": `n` single ports, no two adjacent, so `n` ranges.
std::string separate_ports(size_t n, unsigned first = 1, unsigned step = 2) {
  std::string text;
  for (size_t i = 0; i < n; ++i) {
    if (!text.empty()) text += ",";
    text += std::to_string(first + i * step);
  }
  return text;
}

// ---------------------------------------------------------------- PortSet

TEST(PortSetTest, SinglePort) {
  PortSet set = ports("80");
  EXPECT_EQ(set.ranges(), (std::vector<PortRange>{{80, 80}}));
  EXPECT_EQ(set.port_count(), 1u);
  EXPECT_TRUE(set.contains(80));
  EXPECT_FALSE(set.contains(79));
  EXPECT_FALSE(set.contains(81));
  EXPECT_FALSE(set.contains(0));
}

TEST(PortSetTest, ListIsSorted) {
  PortSet set = ports("8080,443,80");
  EXPECT_EQ(set.ranges(), (std::vector<PortRange>{{80, 80}, {443, 443}, {8080, 8080}}));
  EXPECT_EQ(set.port_count(), 3u);
  EXPECT_TRUE(set.contains(443));
  EXPECT_FALSE(set.contains(444));
}

TEST(PortSetTest, Range) {
  PortSet set = ports("8000-8100");
  EXPECT_EQ(set.ranges(), (std::vector<PortRange>{{8000, 8100}}));
  EXPECT_EQ(set.port_count(), 101u);
  EXPECT_TRUE(set.contains(8000));
  EXPECT_TRUE(set.contains(8050));
  EXPECT_TRUE(set.contains(8100));
  EXPECT_FALSE(set.contains(7999));
  EXPECT_FALSE(set.contains(8101));
}

TEST(PortSetTest, OneElementRange) {
  EXPECT_EQ(ports("22-22").ranges(), (std::vector<PortRange>{{22, 22}}));
}

TEST(PortSetTest, OverlappingAndAdjacentRangesMerge) {
  PortSet set = ports("1-10,5-20,21");
  EXPECT_EQ(set.ranges(), (std::vector<PortRange>{{1, 21}}));
  EXPECT_EQ(set.port_count(), 21u);
  for (uint16_t p = 1; p <= 21; ++p) EXPECT_TRUE(set.contains(p)) << p;
  EXPECT_FALSE(set.contains(22));
}

TEST(PortSetTest, MergingIsOrderIndependent) {
  EXPECT_EQ(ports("21,5-20,1-10").ranges(), (std::vector<PortRange>{{1, 21}}));
  EXPECT_EQ(ports("12,10,11").ranges(), (std::vector<PortRange>{{10, 12}}));
  EXPECT_EQ(ports("80,80,80").ranges(), (std::vector<PortRange>{{80, 80}}));
  EXPECT_EQ(ports("1-100,5-6").ranges(), (std::vector<PortRange>{{1, 100}}));
  EXPECT_EQ(ports("5-6,1-100").ranges(), (std::vector<PortRange>{{1, 100}}));
  EXPECT_EQ(ports("1-5,3-4,4-9").ranges(), (std::vector<PortRange>{{1, 9}}));
}

TEST(PortSetTest, GapOfOneDoesNotMerge) {
  PortSet set = ports("10,12");
  EXPECT_EQ(set.ranges(), (std::vector<PortRange>{{10, 10}, {12, 12}}));
  EXPECT_EQ(set.port_count(), 2u);
  EXPECT_FALSE(set.contains(11));
}

TEST(PortSetTest, Extremes) {
  PortSet top = ports("65535");
  EXPECT_EQ(top.ranges(), (std::vector<PortRange>{{65535, 65535}}));
  EXPECT_TRUE(top.contains(65535));

  PortSet all = ports("1-65535");
  EXPECT_EQ(all.port_count(), 65535u);
  EXPECT_TRUE(all.contains(1));
  EXPECT_TRUE(all.contains(65535));
  EXPECT_FALSE(all.contains(0));

  // Merging up to 65535 must not wrap around 16 bits.
  PortSet merged = ports("65535,1-65534");
  EXPECT_EQ(merged.ranges(), (std::vector<PortRange>{{1, 65535}}));
  EXPECT_EQ(merged.port_count(), 65535u);
  EXPECT_EQ(ports("65534-65535,65535").ranges(), (std::vector<PortRange>{{65534, 65535}}));
}

TEST(PortSetTest, LeadingZerosAreDecimal) {
  EXPECT_EQ(ports("0080").ranges(), (std::vector<PortRange>{{80, 80}}));
}

TEST(PortSetTest, VeryLargeList) {
  // 1000 distinct, non-adjacent ports: 3, 7, 11, ... in a shuffled order.
  std::vector<uint16_t> expected;
  for (unsigned i = 0; i < 1000; ++i) expected.push_back(static_cast<uint16_t>(3 + 4 * i));
  std::string text;
  for (size_t i = 0; i < expected.size(); ++i) {
    // Visit indices in a fixed scrambled order (7 is coprime to 1000).
    const uint16_t port = expected[(i * 7) % expected.size()];
    if (!text.empty()) text += ",";
    text += std::to_string(port);
  }
  PortSet set = ports(text);
  ASSERT_EQ(set.ranges().size(), 1000u);
  EXPECT_EQ(set.port_count(), 1000u);
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(set.ranges()[i], (PortRange{expected[i], expected[i]}));
  }
  size_t wrong = 0;
  for (uint32_t p = 0; p <= 4100; ++p) {
    const bool want = p >= 3 && p <= 3 + 4 * 999 && (p - 3) % 4 == 0;
    if (set.contains(static_cast<uint16_t>(p)) != want && ++wrong <= 5) ADD_FAILURE() << "port " << p;
  }
  EXPECT_EQ(wrong, 0u);
  EXPECT_FALSE(set.contains(65535));
}

// A list is compiled into the program as one switch case per entry: its
// length is capped so a command line cannot make an unbounded program.
TEST(PortSetTest, ListLongerThanTheCapIsAUsageError) {
  std::string at_cap, over_cap;
  for (size_t i = 0; i < PortSet::kMaxEntries; ++i) at_cap += (i ? "," : "") + std::to_string(1 + 2 * i);
  over_cap = at_cap + "," + std::to_string(1 + 2 * PortSet::kMaxEntries);
  EXPECT_TRUE(PortSet::parse("--sport", at_cap).ok());
  auto over = PortSet::parse("--sport", over_cap);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().exit_code, ExitCode::usage);
  EXPECT_EQ(over.error().message, "--sport: more than 1024 entries in the port list (give ranges: 8000-8100)");
  // Entries are counted as given, before adjacent ones merge.
  std::string adjacent;
  for (size_t i = 0; i <= PortSet::kMaxEntries; ++i) adjacent += (i ? "," : "") + std::to_string(1 + i);
  EXPECT_FALSE(PortSet::parse("--dport", adjacent).ok());
}

class PortSetErrorTest : public ::testing::TestWithParam<const char*> {};

TEST_P(PortSetErrorTest, IsAUsageErrorNamingTheOption) {
  auto set = PortSet::parse("--dport", GetParam());
  ASSERT_FALSE(set.ok()) << "'" << GetParam() << "' parsed";
  EXPECT_EQ(set.error().exit_code, ExitCode::usage);
  EXPECT_EQ(set.error().message.rfind("--dport: ", 0), 0u) << set.error().message;
}

INSTANTIATE_TEST_SUITE_P(PortSetBadLists, PortSetErrorTest,
                         ::testing::Values("", "0", "65536", "70000", "99999999999999999999", "80,", ",80",
                                           "80,,443", ",", "-5", "5-", "-", "10-5", "0-5", "5-65536", "1-2-3",
                                           " 80", "80 ", "80, 443", "80 ,443", "abc", "80a", "+80", "0x50",
                                           "8.0", "-1", "80-", "\t80"));

TEST(PortSetTest, ErrorMessagesSayWhatIsWrong) {
  EXPECT_TRUE(Contains(PortSet::parse("--sport", "65536").error().message, "65536"));
  EXPECT_TRUE(Contains(PortSet::parse("--sport", "65536").error().message, "out of range"));
  EXPECT_TRUE(Contains(PortSet::parse("--sport", "0").error().message, "port 0"));
  EXPECT_TRUE(Contains(PortSet::parse("--sport", "10-5").error().message, "10-5"));
  EXPECT_TRUE(Contains(PortSet::parse("--sport", "80,").error().message, "empty"));
  EXPECT_TRUE(Contains(PortSet::parse("--sport", "").error().message, "empty"));
  EXPECT_TRUE(Contains(PortSet::parse("--sport", "abc").error().message, "abc"));
}

// ---------------------------------------------------- build_filter_plan

TEST(FilterPlanTest, NoFiltersNoFlags) {
  FilterPlan plan = build_filter_plan(FilterSpec{});
  EXPECT_TRUE(plan.cflags.empty());
}

TEST(FilterPlanTest, SinglePort) {
  FilterSpec spec;
  spec.sport = ports("80");
  EXPECT_EQ(build_filter_plan(spec).cflags,
            (std::vector<std::string>{"-DFILTER_SPORT_MODE=1", "-DFILTER_SPORT_CASES=case 80: "}));
}

TEST(FilterPlanTest, Range) {
  FilterSpec spec;
  spec.sport = ports("8000-8100");
  EXPECT_EQ(build_filter_plan(spec).cflags,
            (std::vector<std::string>{"-DFILTER_SPORT_MODE=1", "-DFILTER_SPORT_CASES=case 8000 ... 8100: "}));
}

TEST(FilterPlanTest, DportListSortedAndMerged) {
  FilterSpec spec;
  spec.dport = ports("443,80,8000-8100,8101,79");
  EXPECT_EQ(build_filter_plan(spec).cflags,
            (std::vector<std::string>{"-DFILTER_DPORT_MODE=1",
                                      "-DFILTER_DPORT_CASES=case 79 ... 80: case 443: case 8000 ... 8101: "}));
}

TEST(FilterPlanTest, EveryPort) {
  FilterSpec spec;
  spec.dport = ports("1-65535");
  EXPECT_EQ(build_filter_plan(spec).cflags,
            (std::vector<std::string>{"-DFILTER_DPORT_MODE=1", "-DFILTER_DPORT_CASES=case 1 ... 65535: "}));
}

TEST(FilterPlanTest, ThousandPortsAreOneFlagWithThousandLabels) {
  FilterSpec spec;
  spec.sport = ports(separate_ports(1000));
  FilterPlan plan = build_filter_plan(spec);
  ASSERT_EQ(plan.cflags.size(), 2u);
  EXPECT_EQ(plan.cflags[0], "-DFILTER_SPORT_MODE=1");
  std::string expected = "-DFILTER_SPORT_CASES=";
  for (unsigned i = 0; i < 1000; ++i) expected += "case " + std::to_string(1 + 2 * i) + ": ";
  EXPECT_EQ(plan.cflags[1], expected);
}

TEST(FilterPlanTest, BothSides) {
  FilterSpec spec;
  spec.sport = ports("22");
  spec.dport = ports("1024-2047");
  EXPECT_EQ(build_filter_plan(spec).cflags,
            (std::vector<std::string>{"-DFILTER_SPORT_MODE=1", "-DFILTER_SPORT_CASES=case 22: ",
                                      "-DFILTER_DPORT_MODE=1", "-DFILTER_DPORT_CASES=case 1024 ... 2047: "}));
}

TEST(FilterPlanTest, Family) {
  FilterSpec v4;
  v4.family = 4;
  EXPECT_EQ(build_filter_plan(v4).cflags, (std::vector<std::string>{"-DFILTER_FAMILY=4"}));
  FilterSpec v6;
  v6.family = 6;
  EXPECT_EQ(build_filter_plan(v6).cflags, (std::vector<std::string>{"-DFILTER_FAMILY=6"}));
}

TEST(FilterPlanTest, Pid) {
  FilterSpec spec;
  spec.pid = 1234;
  EXPECT_EQ(build_filter_plan(spec).cflags, (std::vector<std::string>{"-DFILTER_PID=1234"}));
}

TEST(FilterPlanTest, MinLatency) {
  FilterSpec spec;
  spec.min_us = 1000;
  EXPECT_EQ(build_filter_plan(spec).cflags, (std::vector<std::string>{"-DFILTER_MIN_US=1000ULL"}));
}

TEST(FilterPlanTest, NoFailures) {
  FilterSpec spec;
  spec.no_failures = true;
  EXPECT_EQ(build_filter_plan(spec).cflags, (std::vector<std::string>{"-DFILTER_NO_FAILURES=1"}));
}

TEST(FilterPlanTest, EverythingTogether) {
  FilterSpec spec;
  spec.sport = ports("22");
  spec.dport = ports("443");
  spec.family = 6;
  spec.pid = 42;
  spec.min_us = 5;
  spec.no_failures = true;
  FilterPlan plan = build_filter_plan(spec);
  EXPECT_EQ(plan.cflags, (std::vector<std::string>{
                             "-DFILTER_SPORT_MODE=1", "-DFILTER_SPORT_CASES=case 22: ",
                             "-DFILTER_DPORT_MODE=1", "-DFILTER_DPORT_CASES=case 443: ",
                             "-DFILTER_FAMILY=6", "-DFILTER_PID=42", "-DFILTER_MIN_US=5ULL",
                             "-DFILTER_NO_FAILURES=1"}));
  // Every macro the host defines is one a user -D may not redefine.
  for (const std::string& flag : plan.cflags) {
    ASSERT_EQ(flag.rfind("-D", 0), 0u) << flag;
    std::string name = flag.substr(2, flag.find_first_of("=(") - 2);
    EXPECT_TRUE(is_reserved_macro_name(name)) << name;
  }
}

TEST(FilterPlanTest, ReservedMacroNames) {
  for (const char* name : {"FILTER_PID", "FILTER_SPORT_MODE", "FILTER_SPORT_CASES", "FILTER_", "FILTER_X",
                           "TCPTRACE_X", "TCPTRACE_", "TCPTRACE_SPORT_WANTED", "TCPTRACE_FILTER_H"}) {
    EXPECT_TRUE(is_reserved_macro_name(name)) << name;
  }
  for (const char* name : {"FOO", "THRESHOLD_US", "FILTER", "TCPTRACE", "filter_pid", "tcptrace_x",
                           "MY_FILTER_PID", "XTCPTRACE_", "_FILTER_PID", ""}) {
    EXPECT_FALSE(is_reserved_macro_name(name)) << name;
  }
}

// ------------------------------------------- the macros as C, evaluated

// Compiles a small C program against filters/tcptrace_filter.h with the
// plan's -D flags exactly as the host passes them (one argv entry each) and
// has it print TCPTRACE_xPORT_WANTED(p) for every port. Done with the host's
// `cc` and, when installed, with `clang` (the compiler inside BCC).
class FilterMacrosInCTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Under CI=true scripts/setup has installed the compiler and the tree is
    // whole: a missing compiler or header there is a failure, not a reason
    // to leave the macros untested.
    const char* ci = std::getenv("CI");
    const bool in_ci = ci != nullptr && std::string(ci) == "true";
    if (std::system("command -v cc >/dev/null 2>&1") != 0) {
      if (in_ci) FAIL() << "CI=true: no host C compiler 'cc' on PATH (scripts/setup installs build-essential)";
      GTEST_SKIP() << "no host C compiler 'cc' on PATH";
    }
    compilers_ = {"cc"};
    if (std::system("command -v clang >/dev/null 2>&1") == 0) compilers_.push_back("clang");
    filters_dir_ = fs::path(__FILE__).parent_path().parent_path() / "filters";
    if (!fs::exists(filters_dir_ / "tcptrace_filter.h")) {
      if (in_ci) FAIL() << "CI=true: filters/tcptrace_filter.h not found next to " << __FILE__;
      GTEST_SKIP() << "filters/tcptrace_filter.h not found next to " << __FILE__;
    }
    std::string pattern = (fs::temp_directory_path() / "tcptrace-filter-c-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    // BPF programs get u8/u32 and __always_inline from BCC's headers.
    std::ofstream(dir_ / "prog.c") << R"(
typedef unsigned char u8;
typedef unsigned int u32;
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#include "tcptrace_filter.h"
#include <stdio.h>

int main(int argc, char **argv) {
  FILE *out;
  u32 p;
  if (argc != 2) return 2;
  out = fopen(argv[1], "w");
  if (!out) return 3;
  for (p = 0; p < 65536; ++p) fputc(TCPTRACE_SPORT_WANTED(p) ? '1' : '0', out);
  fputc('\n', out);
  for (p = 0; p < 65536; ++p) fputc(TCPTRACE_DPORT_WANTED(p) ? '1' : '0', out);
  fputc('\n', out);
  /* Beyond 16 bits nothing wraps around onto a wanted port. */
  fprintf(out, "%d%d\n", TCPTRACE_SPORT_WANTED(65536u + 80u) ? 1 : 0, TCPTRACE_DPORT_WANTED(65536u + 80u) ? 1 : 0);
  fprintf(out, "%d%d%d %d%d %llu %d\n", TCPTRACE_FAMILY_WANTED(4) ? 1 : 0, TCPTRACE_FAMILY_WANTED(6) ? 1 : 0,
          FILTER_FAMILY, TCPTRACE_PID_WANTED(1234) ? 1 : 0, TCPTRACE_PID_WANTED(1) ? 1 : 0,
          (unsigned long long)FILTER_MIN_US, FILTER_NO_FAILURES);
#if FILTER_MIN_US > 0
  fprintf(out, "min_us on\n");
#endif
  fclose(out);
  return 0;
}
)";
  }

  void TearDown() override {
    if (!dir_.empty()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  struct Evaluated {
    std::string sport;  // 65536 '0'/'1'
    std::string dport;
    std::string rest;
  };

  // Builds and runs the program for `spec` with `compiler`; fails the test on any error.
  Evaluated evaluate(const FilterSpec& spec, const std::string& compiler) {
    const FilterPlan plan = build_filter_plan(spec);
    std::string command = compiler + " -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Werror -o '" + (dir_ / "prog").string() +
                          "' -I'" + filters_dir_.string() + "'";
    for (const std::string& flag : plan.cflags) {
      EXPECT_EQ(flag.find('\''), std::string::npos) << flag;
      command += " '" + flag + "'";
    }
    command += " '" + (dir_ / "prog.c").string() + "' 2>'" + (dir_ / "cc.log").string() + "'";
    if (std::system(command.c_str()) != 0) {
      std::ifstream log(dir_ / "cc.log");
      ADD_FAILURE() << "compiling failed: " << command.substr(0, 500) << "\n"
                    << std::string(std::istreambuf_iterator<char>(log), {});
      return {};
    }
    const std::string run = "'" + (dir_ / "prog").string() + "' '" + (dir_ / "out").string() + "'";
    if (std::system(run.c_str()) != 0) {
      ADD_FAILURE() << "running failed: " << run;
      return {};
    }
    std::ifstream out(dir_ / "out");
    Evaluated result;
    std::getline(out, result.sport);
    std::getline(out, result.dport);
    std::string line;
    while (std::getline(out, line)) result.rest += line + "\n";
    return result;
  }

  // Compares a 65536-character evaluation with the set (nullopt: all wanted).
  static void expect_matches(const std::string& evaluated, const std::optional<PortSet>& set,
                             const char* which) {
    ASSERT_EQ(evaluated.size(), 65536u) << which;
    // The set as a bitmap (PortSetTest checks contains() agrees with ranges()).
    std::vector<bool> wanted(65536, !set);
    if (set) {
      for (const PortRange& r : set->ranges()) {
        for (uint32_t p = r.first; p <= r.last; ++p) wanted[p] = true;
      }
    }
    size_t mismatches = 0;
    for (uint32_t p = 0; p <= 65535; ++p) {
      const bool want = wanted[p];
      if ((evaluated[p] == '1') != want && ++mismatches <= 5) {
        ADD_FAILURE() << which << " port " << p << ": macro says " << evaluated[p] << ", PortSet says " << want;
      }
    }
    EXPECT_EQ(mismatches, 0u) << which;
  }

  std::vector<std::string> compilers_;
  fs::path filters_dir_;
  fs::path dir_;
};

TEST_F(FilterMacrosInCTest, NoFiltersWantEverything) {
  for (const std::string& compiler : compilers_) {
    SCOPED_TRACE(compiler);
    Evaluated e = evaluate(FilterSpec{}, compiler);
    expect_matches(e.sport, std::nullopt, "sport");
    expect_matches(e.dport, std::nullopt, "dport");
    EXPECT_EQ(e.rest, "11\n110 11 0 0\n");
  }
}

TEST_F(FilterMacrosInCTest, PortSetsAgreeWithPortSetContains) {
  const std::vector<std::string> lists = {
      "80",
      "1",
      "65535",
      "1-65535",
      "8000-8100",
      "1-10,5-20,21",
      "22,80,443,8000-8100,65535",
      separate_ports(8),
      separate_ports(9),
      separate_ports(1000, 7, 5),
      "1-100,200-300,400,500-600,700,800-900,1000,1100-1200,60000-65535",
  };
  for (const std::string& compiler : compilers_) {
    // Two sets per build, a different one on each side so they cannot be mixed up.
    for (size_t i = 0; i < lists.size(); i += 2) {
      const std::string& other = lists[(i + 1) % lists.size()];
      SCOPED_TRACE(compiler + ": sport " + lists[i].substr(0, 40) + " dport " + other.substr(0, 40));
      FilterSpec spec;
      spec.sport = ports(lists[i]);
      spec.dport = ports(other);
      Evaluated e = evaluate(spec, compiler);
      expect_matches(e.sport, spec.sport, "sport");
      expect_matches(e.dport, spec.dport, "dport");
      EXPECT_EQ(e.rest.substr(0, 3), "00\n") << "65536+80 is not port 80";
    }
  }
}

TEST_F(FilterMacrosInCTest, OnlyOneSideFiltered) {
  for (const std::string& compiler : compilers_) {
    SCOPED_TRACE(compiler);
    FilterSpec spec;
    spec.dport = ports("443");
    Evaluated e = evaluate(spec, compiler);
    expect_matches(e.sport, std::nullopt, "sport");
    expect_matches(e.dport, spec.dport, "dport");
  }
}

TEST_F(FilterMacrosInCTest, ScalarFilters) {
  for (const std::string& compiler : compilers_) {
    SCOPED_TRACE(compiler);
    FilterSpec spec;
    spec.family = 6;
    spec.pid = 1234;
    spec.min_us = 1000;
    spec.no_failures = true;
    EXPECT_EQ(evaluate(spec, compiler).rest, "11\n016 10 1000 1\nmin_us on\n");

    FilterSpec v4;
    v4.family = 4;
    v4.pid = 1;
    EXPECT_EQ(evaluate(v4, compiler).rest, "11\n104 01 0 0\n");
  }
}

}  // namespace
}  // namespace tcptrace
