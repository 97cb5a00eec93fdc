// Per-CPU map reads are sized by the kernel's possible CPUs, whatever form
// /sys/devices/system/cpu/possible takes. The test writes the same set
// without ranges ("0,1" for "0-1") over the file in a private mount
// namespace, counts events on every CPU in the kernel and checks one scrape
// holds them all: a buffer sized for fewer CPUs than the kernel copies would
// be overrun (AddressSanitizer stops the tool) and would miss the later
// CPUs' counts.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <thread>

#include "http_get.h"
#include "temp_dir.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using namespace std::chrono_literals;

constexpr unsigned kSelector = 0x7e57ed9e;  // declared_metrics.bpf.c's SELECTOR

// The CPUs a list such as "0-3,6" names, read by the test itself.
std::vector<int> cpus_of(const std::string& list) {
  std::vector<int> cpus;
  size_t pos = 0;
  while (pos < list.size()) {
    const size_t comma = list.find(',', pos);
    const std::string item = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const size_t dash = item.find('-');
    const int first = std::stoi(item);
    const int last = dash == std::string::npos ? first : std::stoi(item.substr(dash + 1));
    for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return cpus;
}

TEST(PossibleCpus, ListWithoutRangesSizesPerCpuReads) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  std::string possible;
  std::getline(std::ifstream("/sys/devices/system/cpu/possible"), possible);
  const std::vector<int> cpus = cpus_of(possible);
  ASSERT_GE(cpus.size(), 2u) << "needs two CPUs to show a per-CPU read missing one";
  std::vector<int> online = cpus_of([] {
    std::string text;
    std::getline(std::ifstream("/sys/devices/system/cpu/online"), text);
    return text;
  }());
  TempDir dir("tcptrace-cpus");
  ASSERT_FALSE(dir.path().empty());
  std::string listed;
  for (int cpu : cpus) listed += (listed.empty() ? "" : ",") + std::to_string(cpu);
  const std::string fake = (dir.path() / "possible").string();
  std::ofstream(fake) << listed << "\n";

  const std::vector<std::string> wrapper = {
      "unshare", "--mount", "--propagation", "private", "sh", "-c",
      "mount --bind " + fake + " /sys/devices/system/cpu/possible && exec \"$0\" \"$@\""};
  ToolProcess tool(wrapper, {"--program-file", std::string(TCPTRACE_SOURCE_DIR) + "/tests/fixtures/declared_metrics.bpf.c",
                             "-D", "TEST_PID=" + std::to_string(getpid()), "--output", "none", "--metrics",
                             "127.0.0.1:0", "--aggregate", "kernel"});
  ASSERT_TRUE(tool.wait_until_ready(scaled(120s))) << tool.stderr_text();
  const uint16_t port = served_metrics_port(tool.stderr_text());
  ASSERT_NE(port, 0) << tool.stderr_text();

  // A different number of events on each online CPU, made from that CPU.
  cpu_set_t before;
  ASSERT_EQ(sched_getaffinity(0, sizeof before, &before), 0);
  double expected = 0;
  for (size_t i = 0; i < online.size(); ++i) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(online[i], &one);
    ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0) << "CPU " << online[i];
    for (size_t n = 0; n < 2 + i; ++n) {
      errno = 0;
      EXPECT_EQ(::syscall(SYS_lseek, kSelector, 10, 0 | 4 << 8), -1);
      expected += 1;
    }
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof before, &before), 0);

  std::map<std::string, double> series;
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  do {
    series = parse_exposition(http_get(port, "/metrics").body);
    if (series["tcptrace_events_total"] >= expected) break;
    std::this_thread::sleep_for(50ms);
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(series["tcptrace_events_total"], expected);
  EXPECT_EQ(series["fixture_ops_total{family=\"ipv4\",op=\"read\"}"], expected);
  EXPECT_EQ(tool.stop(SIGINT), 0) << tool.stderr_text();
}

}  // namespace
}  // namespace tcptrace::testing
