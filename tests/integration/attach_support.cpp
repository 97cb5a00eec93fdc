#include "attach_support.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tool_process.h"

namespace tcptrace::testing {

bool kernel_has_kprobes() {
  struct stat st {};
  return stat("/sys/bus/event_source/devices/kprobe/type", &st) == 0 ||
         stat("/sys/kernel/tracing/kprobe_events", &st) == 0 ||
         stat("/sys/kernel/debug/tracing/kprobe_events", &st) == 0;
}

bool attach_required(const std::string& method) {
  const char* list = std::getenv("TCPTRACE_TEST_REQUIRE_ATTACH");
  if (list == nullptr) return false;
  std::istringstream words(list);
  for (std::string word; words >> word;) {
    if (word == method) return true;
  }
  return false;
}

std::set<std::string> vm_test_names() {
  std::ifstream file(std::string(TCPTRACE_SOURCE_DIR) + "/tests/vm/stock-kernel-tests");
  std::set<std::string> names;
  for (std::string line; std::getline(file, line);) {
    if (!line.empty() && line[0] != '#') names.insert(line);
  }
  return names;
}

std::string current_test_name() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return info == nullptr ? "" : std::string(info->test_suite_name()) + "." + info->name();
}

namespace {

// `required`: the word TCPTRACE_TEST_REQUIRE_ATTACH would name; `missing`:
// what this kernel cannot do, as the messages say it.
CannotAttach verdict(const std::string& required, const std::string& missing, const std::string& why) {
  const std::string name = current_test_name();
  if (attach_required(required)) {
    return {false, "TCPTRACE_TEST_REQUIRE_ATTACH names " + required + ", but this kernel " + missing + ": " + why};
  }
  if (vm_test_names().count(name) != 0) {
    return {true, "this kernel " + missing + "; the VM test (scripts/vm-test) runs " + name +
                      " on a stock Debian kernel that can: " + why};
  }
  if (running_in_ci()) {
    return {false, "CI=true: this kernel " + missing + " and the VM test (scripts/vm-test) does not run " + name +
                       " (tests/vm/stock-kernel-tests): " + why};
  }
  return {true, "this kernel " + missing + " (and the VM test does not run " + name + "): " + why};
}

}  // namespace

CannotAttach cannot_attach(const std::string& method, const std::string& why) {
  return verdict(method, "cannot attach " + method, why);
}

CannotAttach kernel_lacks(const std::string& feature, const std::string& why) {
  return verdict(feature, "lacks " + feature, why);
}

}  // namespace tcptrace::testing
