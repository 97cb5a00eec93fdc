#include "probe_spec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tcptrace {
namespace {

constexpr ProbeKind kAllKinds[] = {ProbeKind::tracepoint, ProbeKind::raw_tracepoint, ProbeKind::kprobe,
                                   ProbeKind::kretprobe,  ProbeKind::kfunc,          ProbeKind::kretfunc};

TEST(ProbeSpecTest, Tracepoint) {
  auto spec = probe_from_function_name("tracepoint__sock__inet_sock_set_state");
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->kind, ProbeKind::tracepoint);
  EXPECT_EQ(spec->function, "tracepoint__sock__inet_sock_set_state");
  EXPECT_EQ(spec->category, "sock");
  EXPECT_EQ(spec->target, "inet_sock_set_state");
}

TEST(ProbeSpecTest, TracepointEventMayContainDoubleUnderscore) {
  // The first "__" after the category separates; the rest is the event.
  auto spec = probe_from_function_name("tracepoint__syscalls__sys_enter__x");
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->category, "syscalls");
  EXPECT_EQ(spec->target, "sys_enter__x");
}

TEST(ProbeSpecTest, RawTracepoint) {
  auto spec = probe_from_function_name("raw_tracepoint__inet_sk_error_report");
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->kind, ProbeKind::raw_tracepoint);
  EXPECT_EQ(spec->function, "raw_tracepoint__inet_sk_error_report");
  EXPECT_EQ(spec->category, "");
  EXPECT_EQ(spec->target, "inet_sk_error_report");
}

TEST(ProbeSpecTest, Kprobe) {
  auto spec = probe_from_function_name("kprobe__tcp_v4_connect");
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->kind, ProbeKind::kprobe);
  EXPECT_EQ(spec->function, "kprobe__tcp_v4_connect");
  EXPECT_EQ(spec->category, "");
  EXPECT_EQ(spec->target, "tcp_v4_connect");
}

TEST(ProbeSpecTest, KretprobeIsNotAKprobe) {
  auto spec = probe_from_function_name("kretprobe__tcp_v4_connect");
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->kind, ProbeKind::kretprobe);
  EXPECT_EQ(spec->function, "kretprobe__tcp_v4_connect");
  EXPECT_EQ(spec->target, "tcp_v4_connect");
}

TEST(ProbeSpecTest, Kfunc) {
  auto spec = probe_from_function_name("kfunc__tcp_rcv_state_process");
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->kind, ProbeKind::kfunc);
  EXPECT_EQ(spec->function, "kfunc__tcp_rcv_state_process");
  EXPECT_EQ(spec->category, "");
  EXPECT_EQ(spec->target, "tcp_rcv_state_process");
}

TEST(ProbeSpecTest, Kretfunc) {
  auto spec = probe_from_function_name("kretfunc__x");
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->kind, ProbeKind::kretfunc);
  EXPECT_EQ(spec->function, "kretfunc__x");
  EXPECT_EQ(spec->target, "x");
}

TEST(ProbeSpecTest, KprobeTargetKeepsDoubleUnderscores) {
  // Everything after the prefix is the kernel function, "__" included.
  auto spec = probe_from_function_name("kprobe__tcp_v4_connect__x");
  ASSERT_TRUE(spec.has_value());
  EXPECT_EQ(spec->target, "tcp_v4_connect__x");
}

TEST(ProbeSpecTest, NonProbesAreNullopt) {
  for (const char* name : {"", "helper", "count_event", "handle_state", "tracepoint", "tracepoint_",
                           "tracepoint__", "tracepoint__nocat", "tracepoint__sock__", "tracepoint____event",
                           "tracepoint__sock_", "raw_tracepoint__", "kprobe__", "kprobe_tcp_v4_connect",
                           "kretprobe__", "kfunc__", "kretfunc__", "my_kprobe__tcp_v4_connect",
                           "Kprobe__tcp_v4_connect", "__kprobe__x", "uprobe__x", "kprobe"}) {
    EXPECT_FALSE(probe_from_function_name(name).has_value()) << "'" << name << "'";
  }
}

TEST(ProbeSpecTest, FunctionNameFor) {
  EXPECT_EQ(function_name_for(ProbeKind::tracepoint, "sock", "inet_sock_set_state"),
            "tracepoint__sock__inet_sock_set_state");
  EXPECT_EQ(function_name_for(ProbeKind::raw_tracepoint, "", "inet_sk_error_report"),
            "raw_tracepoint__inet_sk_error_report");
  EXPECT_EQ(function_name_for(ProbeKind::kprobe, "", "tcp_v4_connect"), "kprobe__tcp_v4_connect");
  EXPECT_EQ(function_name_for(ProbeKind::kretprobe, "", "tcp_v4_connect"), "kretprobe__tcp_v4_connect");
  EXPECT_EQ(function_name_for(ProbeKind::kfunc, "", "tcp_rcv_state_process"), "kfunc__tcp_rcv_state_process");
  EXPECT_EQ(function_name_for(ProbeKind::kretfunc, "", "x"), "kretfunc__x");
  // The category only belongs to tracepoints.
  EXPECT_EQ(function_name_for(ProbeKind::kprobe, "ignored", "f"), "kprobe__f");
}

TEST(ProbeSpecTest, RoundTripForEveryKind) {
  for (ProbeKind kind : kAllKinds) {
    SCOPED_TRACE(std::string(kind_name(kind)));
    const std::string category = kind == ProbeKind::tracepoint ? "tcp" : "";
    for (const char* target : {"tcp_v4_connect", "x", "tcp_retransmit_skb", "sys_enter__with__dunders"}) {
      const std::string name = function_name_for(kind, category, target);
      auto spec = probe_from_function_name(name);
      ASSERT_TRUE(spec.has_value()) << name;
      EXPECT_EQ(spec->kind, kind) << name;
      EXPECT_EQ(spec->function, name);
      EXPECT_EQ(spec->category, category);
      EXPECT_EQ(spec->target, target);
      EXPECT_EQ(function_name_for(spec->kind, spec->category, spec->target), name);
    }
  }
}

TEST(ProbeSpecTest, KindNames) {
  EXPECT_EQ(kind_name(ProbeKind::tracepoint), "tracepoint");
  EXPECT_EQ(kind_name(ProbeKind::raw_tracepoint), "raw_tracepoint");
  EXPECT_EQ(kind_name(ProbeKind::kprobe), "kprobe");
  EXPECT_EQ(kind_name(ProbeKind::kretprobe), "kretprobe");
  EXPECT_EQ(kind_name(ProbeKind::kfunc), "kfunc");
  EXPECT_EQ(kind_name(ProbeKind::kretfunc), "kretfunc");
}

TEST(ProbeSpecTest, Describe) {
  EXPECT_EQ(describe(*probe_from_function_name("tracepoint__sock__inet_sock_set_state")),
            "tracepoint sock:inet_sock_set_state");
  EXPECT_EQ(describe(*probe_from_function_name("raw_tracepoint__inet_sk_error_report")),
            "raw_tracepoint inet_sk_error_report");
  EXPECT_EQ(describe(*probe_from_function_name("kprobe__tcp_v4_connect")), "kprobe tcp_v4_connect");
  EXPECT_EQ(describe(*probe_from_function_name("kretprobe__tcp_v4_connect")), "kretprobe tcp_v4_connect");
  EXPECT_EQ(describe(*probe_from_function_name("kfunc__tcp_rcv_state_process")), "kfunc tcp_rcv_state_process");
  EXPECT_EQ(describe(*probe_from_function_name("kretfunc__x")), "kretfunc x");
}

TEST(ProbeSpecTest, AttachPlanFiltersAndKeepsOrder) {
  const std::vector<std::string> functions = {
      "kretprobe__tcp_v4_connect",
      "helper",
      "tracepoint__sock__inet_sock_set_state",
      "kprobe__",
      "kprobe__tcp_v4_connect",
      "tracepoint__nocat",
      "raw_tracepoint__inet_sk_error_report",
      "kfunc__tcp_rcv_state_process",
      "another_helper",
      "kretfunc__x",
  };
  const std::vector<ProbeSpec> plan = attach_plan(functions);
  ASSERT_EQ(plan.size(), 6u);
  EXPECT_EQ(plan[0], (ProbeSpec{ProbeKind::kretprobe, "kretprobe__tcp_v4_connect", "", "tcp_v4_connect"}));
  EXPECT_EQ(plan[1], (ProbeSpec{ProbeKind::tracepoint, "tracepoint__sock__inet_sock_set_state", "sock",
                                "inet_sock_set_state"}));
  EXPECT_EQ(plan[2], (ProbeSpec{ProbeKind::kprobe, "kprobe__tcp_v4_connect", "", "tcp_v4_connect"}));
  EXPECT_EQ(plan[3], (ProbeSpec{ProbeKind::raw_tracepoint, "raw_tracepoint__inet_sk_error_report", "",
                                "inet_sk_error_report"}));
  EXPECT_EQ(plan[4], (ProbeSpec{ProbeKind::kfunc, "kfunc__tcp_rcv_state_process", "", "tcp_rcv_state_process"}));
  EXPECT_EQ(plan[5], (ProbeSpec{ProbeKind::kretfunc, "kretfunc__x", "", "x"}));
}

TEST(ProbeSpecTest, AttachPlanEmpty) {
  EXPECT_TRUE(attach_plan({}).empty());
  EXPECT_TRUE(attach_plan({"helper", "main", "kprobe__"}).empty());
}

TEST(ProbeSpecTest, AttachPlanKeepsDuplicates) {
  // Two probes on one function are the program's business; the plan mirrors it.
  const auto plan = attach_plan({"kprobe__f", "kprobe__f"});
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0], plan[1]);
}

}  // namespace
}  // namespace tcptrace
