// How runs end and what they leave: SIGKILL leaves nothing loaded (the
// kernel releases programs with their last fd), and a consumer that falls
// behind loses events visibly, per CPU, while the run goes on.
#include <gtest/gtest.h>
#include <signal.h>

#include <regex>
#include <thread>

#include "loopback.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

TEST(Lifecycle, SigkillLeavesNoProgramLoaded) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const std::set<uint32_t> before = loaded_bpf_program_ids();
  ToolProcess tool({"--program", "connlat"});
  ASSERT_TRUE(tool.wait_for_stderr("ready", 120s)) << tool.stderr_text();
  std::set<uint32_t> ours;
  for (uint32_t id : loaded_bpf_program_ids()) {
    if (!before.count(id)) ours.insert(id);
  }
  ASSERT_FALSE(ours.empty()) << "the running tool should have programs loaded";
  EXPECT_EQ(tool.stop(SIGKILL), 128 + SIGKILL);
  std::set<uint32_t> left = ours;
  for (int i = 0; i < 100 && !left.empty(); ++i) {
    std::this_thread::sleep_for(50ms);
    const std::set<uint32_t> now = loaded_bpf_program_ids();
    left.clear();
    for (uint32_t id : ours) {
      if (now.count(id)) left.insert(id);
    }
  }
  EXPECT_TRUE(left.empty()) << left.size() << " programs stayed loaded after SIGKILL";
}

TEST(Lifecycle, OverloadIsCountedPerCpuAndTheRunGoesOn) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ToolProcess tool({"--program", "states", "--buffer-pages", "1"});
  ASSERT_TRUE(tool.wait_for_stderr("ready", 120s)) << tool.stderr_text();
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  // The consumer stops while the kernel keeps writing into one-page buffers.
  ASSERT_EQ(kill(tool.pid(), SIGSTOP), 0);
  for (int i = 0; i < 400; ++i) {
    Socket client = connect_loopback(AF_INET, listener.local_port());
    Socket server = accept_one(listener);
  }
  ASSERT_EQ(kill(tool.pid(), SIGCONT), 0);
  std::this_thread::sleep_for(500ms);

  // The kernel writes its record of the loss into a buffer once there is
  // room again, ahead of the next event: new traffic brings it, and shows
  // the run goes on.
  const size_t lines_before = tool.stdout_lines().size();
  Socket late_listener = bind_loopback(AF_INET);
  start_listening(late_listener);
  for (int i = 0; i < 20; ++i) {
    Socket c = connect_loopback(AF_INET, late_listener.local_port());
    Socket s = accept_one(late_listener);
  }
  ASSERT_TRUE(tool.wait_for_stderr("lost ", 10s)) << tool.stderr_text();
  EXPECT_TRUE(std::regex_search(tool.stderr_text(), std::regex("lost [1-9][0-9]* events on CPU [0-9]+")))
      << tool.stderr_text();
  ASSERT_TRUE(tool.wait_for_lines(lines_before + 3, 10s));
  ASSERT_EQ(tool.stop(SIGINT), 0) << tool.stderr_text();
  bool late_seen = false;
  for (const json& e : tool.events()) late_seen |= e.at("sport") == late_listener.local_port();
  EXPECT_TRUE(late_seen);
  // The summary repeats the total and its split by CPU.
  EXPECT_TRUE(std::regex_search(tool.stderr_text(),
                                std::regex("events, [1-9][0-9]* lost \\(buffer, CPU [0-9]+: [1-9][0-9]*")))
      << tool.stderr_text();
}

}  // namespace
}  // namespace tcptrace::testing
