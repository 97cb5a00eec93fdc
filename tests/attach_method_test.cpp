#include "attach_method.h"

#include <gtest/gtest.h>

#include "program_annotations.h"

namespace tcptrace {
namespace {

const std::vector<AttachMethod> kAllThree = {AttachMethod::kfunc, AttachMethod::kprobe, AttachMethod::tracepoint};

KernelCapabilities faked(bool kfunc, bool kprobe, bool tracepoint) {
  KernelCapabilities caps;
  caps.kfunc = {kfunc, kfunc ? "" : "no fentry here"};
  caps.kprobe = {kprobe, kprobe ? "" : "no kprobes here"};
  caps.tracepoint = {tracepoint, tracepoint ? "" : "no tracefs here"};
  return caps;
}

// Every combination of kernel support, auto mode: the first supported
// method in the program's order, or a runtime error listing each reason.
TEST(AttachMethod, AutoOverAllCapabilityCombinations) {
  for (int bits = 0; bits < 8; ++bits) {
    const bool kfunc = bits & 1, kprobe = bits & 2, tracepoint = bits & 4;
    auto chosen = choose_attach_method(std::nullopt, kAllThree, faked(kfunc, kprobe, tracepoint));
    SCOPED_TRACE("kfunc=" + std::to_string(kfunc) + " kprobe=" + std::to_string(kprobe) +
                 " tracepoint=" + std::to_string(tracepoint));
    if (kfunc) {
      ASSERT_TRUE(chosen);
      EXPECT_EQ(*chosen, AttachMethod::kfunc);
    } else if (kprobe) {
      ASSERT_TRUE(chosen);
      EXPECT_EQ(*chosen, AttachMethod::kprobe);
    } else if (tracepoint) {
      ASSERT_TRUE(chosen);
      EXPECT_EQ(*chosen, AttachMethod::tracepoint);
    } else {
      ASSERT_FALSE(chosen);
      EXPECT_EQ(chosen.error().exit_code, ExitCode::runtime);
      EXPECT_NE(chosen.error().message.find("kfunc: no fentry here"), std::string::npos);
      EXPECT_NE(chosen.error().message.find("kprobe: no kprobes here"), std::string::npos);
      EXPECT_NE(chosen.error().message.find("tracepoint: no tracefs here"), std::string::npos);
    }
  }
}

// Explicit requests over every combination: granted exactly when supported.
TEST(AttachMethod, ExplicitOverAllCapabilityCombinations) {
  for (int bits = 0; bits < 8; ++bits) {
    const KernelCapabilities caps = faked(bits & 1, bits & 2, bits & 4);
    for (AttachMethod requested : kAllThree) {
      auto chosen = choose_attach_method(requested, kAllThree, caps);
      if (caps.of(requested).available) {
        ASSERT_TRUE(chosen);
        EXPECT_EQ(*chosen, requested);
      } else {
        ASSERT_FALSE(chosen);
        EXPECT_EQ(chosen.error().exit_code, ExitCode::runtime);
        EXPECT_EQ(chosen.error().message,
                  "--attach " + std::string(method_name(requested)) + ": " + caps.of(requested).reason);
      }
    }
  }
}

TEST(AttachMethod, ThisMachinesKernelPicksTracepoints) {
  // No kprobes (CONFIG_KPROBES off) and no tracing program type.
  auto chosen = choose_attach_method(std::nullopt, kAllThree, faked(false, false, true));
  ASSERT_TRUE(chosen);
  EXPECT_EQ(*chosen, AttachMethod::tracepoint);
}

TEST(AttachMethod, ProgramOrderIsRespected) {
  auto chosen = choose_attach_method(std::nullopt, {AttachMethod::tracepoint, AttachMethod::kfunc},
                                     faked(true, true, true));
  ASSERT_TRUE(chosen);
  EXPECT_EQ(*chosen, AttachMethod::tracepoint);
}

TEST(AttachMethod, MethodTheProgramDoesNotOfferIsAUsageError) {
  auto chosen = choose_attach_method(AttachMethod::kprobe, {AttachMethod::tracepoint}, faked(true, true, true));
  ASSERT_FALSE(chosen);
  EXPECT_EQ(chosen.error().exit_code, ExitCode::usage);
  EXPECT_NE(chosen.error().message.find("offers: tracepoint"), std::string::npos);
}

TEST(AttachMethod, NamesAndMacros) {
  for (AttachMethod m : kAllThree) EXPECT_EQ(method_from_name(method_name(m)), m);
  EXPECT_FALSE(method_from_name("auto"));
  EXPECT_FALSE(method_from_name("fentry"));
  EXPECT_EQ(method_macro(AttachMethod::kfunc), "TCPTRACE_ATTACH_KFUNC");
  EXPECT_EQ(method_macro(AttachMethod::kprobe), "TCPTRACE_ATTACH_KPROBE");
  EXPECT_EQ(method_macro(AttachMethod::tracepoint), "TCPTRACE_ATTACH_TRACEPOINT");
}

TEST(ProgramAnnotations, ParsesAttachAndFilters) {
  auto parsed = parse_program_annotations(
      "/* x\n * tcptrace:attach kfunc kprobe tracepoint\n * tcptrace:filters sport pid min-us\n */\nint y;\n");
  ASSERT_TRUE(parsed) << parsed.error().message;
  EXPECT_EQ(parsed->attach_methods, kAllThree);
  EXPECT_EQ(parsed->filters, (std::vector<std::string>{"sport", "pid", "min-us"}));
  EXPECT_TRUE(parsed->honours("pid"));
  EXPECT_FALSE(parsed->honours("dport"));
}

TEST(ProgramAnnotations, NoAnnotationsMeansNoVariantsAndNoFilters) {
  auto parsed = parse_program_annotations("int x;\n// tcptrace:format a=hex\n");
  ASSERT_TRUE(parsed);
  EXPECT_TRUE(parsed->attach_methods.empty());
  EXPECT_TRUE(parsed->filters.empty());
}

TEST(ProgramAnnotations, UnknownWordsNameTheLine) {
  auto bad_method = parse_program_annotations("\n\n// tcptrace:attach kfunc uprobe\n");
  ASSERT_FALSE(bad_method);
  EXPECT_NE(bad_method.error().message.find("line 3"), std::string::npos);
  EXPECT_NE(bad_method.error().message.find("uprobe"), std::string::npos);
  auto bad_filter = parse_program_annotations("// tcptrace:filters sport cgroup\n");
  ASSERT_FALSE(bad_filter);
  EXPECT_NE(bad_filter.error().message.find("line 1: unknown filter 'cgroup'"), std::string::npos);
}

TEST(ProgramAnnotations, Buffers) {
  auto both = parse_program_annotations("// tcptrace:buffers ringbuf perf\n");
  ASSERT_TRUE(both);
  EXPECT_TRUE(both->ring_buffer_capable);
  auto perf_only = parse_program_annotations("// tcptrace:buffers perf\n");
  ASSERT_TRUE(perf_only);
  EXPECT_FALSE(perf_only->ring_buffer_capable);
  auto bad = parse_program_annotations("// tcptrace:buffers shm\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("unknown buffer kind 'shm'"), std::string::npos);
}

TEST(ProgramAnnotations, Seed) {
  auto both = parse_program_annotations("/*\n * tcptrace:seed tcp-listeners=listeners tcp-connections=known_2\n */\n");
  ASSERT_TRUE(both) << both.error().message;
  ASSERT_EQ(both->seeds.size(), 2u);
  EXPECT_EQ(both->seeds[0].kind, SeedKind::tcp_listeners);
  EXPECT_EQ(both->seeds[0].map, "listeners");
  EXPECT_EQ(both->seeds[1].kind, SeedKind::tcp_connections);
  EXPECT_EQ(both->seeds[1].map, "known_2");
  EXPECT_TRUE(parse_program_annotations("int x;\n")->seeds.empty());
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"// tcptrace:seed listeners\n", "line 1: tcptrace:seed 'listeners': expected KIND=MAP"},
      {"// tcptrace:seed udp-sockets=m\n",
       "line 1: tcptrace:seed 'udp-sockets=m': unknown kind (known: tcp-listeners, tcp-connections)"},
      {"// tcptrace:seed tcp-listeners=1m\n", "line 1: tcptrace:seed 'tcp-listeners=1m': the map name is not an identifier"},
      {"// tcptrace:seed tcp-listeners=\n", "line 1: tcptrace:seed 'tcp-listeners=': the map name is not an identifier"},
      {"// tcptrace:seed tcp-listeners=a\n// tcptrace:seed tcp-listeners=b\n",
       "line 2: tcptrace:seed 'tcp-listeners=b': this kind is already seeded into map 'a'"},
  };
  for (const auto& [source, message] : bad) {
    auto parsed = parse_program_annotations(source);
    ASSERT_FALSE(parsed) << source;
    EXPECT_EQ(parsed.error().message, message);
  }
}

TEST(ProgramAnnotations, MarkerMustStandAlone) {
  auto parsed = parse_program_annotations("// tcptrace:attachments are nice\n");
  ASSERT_TRUE(parsed);
  EXPECT_TRUE(parsed->attach_methods.empty());
}

}  // namespace
}  // namespace tcptrace
