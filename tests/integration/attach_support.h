// What to do when this kernel cannot attach an attach method a test needs:
// skip where the VM test (scripts/vm-test) runs the test on a stock kernel
// that can, fail where the run requires the method or runs in CI without
// that cover.
#pragma once

#include <set>
#include <string>

namespace tcptrace::testing {

// Whether this kernel has kprobes (the kprobe PMU or tracefs's kprobe_events).
bool kernel_has_kprobes();

// Whether TCPTRACE_TEST_REQUIRE_ATTACH (a space-separated list; scripts/vm-test
// sets it on a stock kernel that has them all) names `method`: a test that
// needs it then fails where the kernel cannot attach it, instead of skipping.
bool attach_required(const std::string& method);

// The tests scripts/vm-test runs in its VM (tests/vm/stock-kernel-tests).
std::set<std::string> vm_test_names();

// "Suite.Name" of the running test, as gtest filters and reports name it.
std::string current_test_name();

// The verdict on a test that needs `method` where this kernel cannot attach
// it (`why`: the kernel's or the tool's reason).
struct CannotAttach {
  bool skip = false;    // false: the test must fail with `message`
  std::string message;
};
CannotAttach cannot_attach(const std::string& method, const std::string& why);

// The same verdict for a kernel feature a test needs besides an attach
// method (a qdisc: "netem"), named in TCPTRACE_TEST_REQUIRE_ATTACH too.
CannotAttach kernel_lacks(const std::string& feature, const std::string& why);

}  // namespace tcptrace::testing

// Ends the running test where this kernel cannot attach `method`: a skip
// naming the VM test that covers it, or a failure (see cannot_attach).
#define TCPTRACE_CANNOT_ATTACH(method, why)                                        \
  do {                                                                             \
    const auto verdict = ::tcptrace::testing::cannot_attach((method), (why));      \
    if (verdict.skip) GTEST_SKIP() << verdict.message;                             \
    FAIL() << verdict.message;                                                     \
  } while (0)

// Ends the running test where this kernel lacks `feature` (kernel_lacks).
#define TCPTRACE_KERNEL_LACKS(feature, why)                                        \
  do {                                                                             \
    const auto verdict = ::tcptrace::testing::kernel_lacks((feature), (why));      \
    if (verdict.skip) GTEST_SKIP() << verdict.message;                             \
    FAIL() << verdict.message;                                                     \
  } while (0)
