// Hostile data from the kernel: processes renamed (prctl PR_SET_NAME) to
// bytes that break naive JSON writers make real connections; every line must
// stay one valid JSON object, with invalid UTF-8 replaced by U+FFFD.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <thread>

#include "loopback.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct HostileName {
  std::string bytes;     // what the process calls itself (at most 15 bytes)
  std::string expected;  // the comm a JSON parser must read back
};

const std::vector<HostileName> kNames = {
    {"q\"uo\"te\\back", "q\"uo\"te\\back"},
    {"new\nline\ttab\r", "new\nline\ttab\r"},
    {"\x01\x02\x1f\x7f ctl", "\x01\x02\x1f\x7f ctl"},
    {"bad\xff\xfe utf", "bad\xEF\xBF\xBD\xEF\xBF\xBD utf"},
    {"cut\xc3(\xe2\x82", "cut\xEF\xBF\xBD(\xEF\xBF\xBD\xEF\xBF\xBD"},
    {"ok\xf0\x9f\x98\x80\xc3\xa9", "ok\xf0\x9f\x98\x80\xc3\xa9"},
};

// A child renamed to `name` listens, connects to itself and closes both
// ends; returns its pid once it is done.
pid_t renamed_child_connecting(const std::string& name) {
  const pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_NAME, name.c_str(), 0, 0, 0);
    Socket listener = bind_loopback(AF_INET);
    start_listening(listener);
    Socket client = connect_loopback(AF_INET, listener.local_port());
    Socket server = accept_one(listener);
    _exit(client.fd() >= 0 && server.fd() >= 0 ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return child;
}

void expect_names_survive(const std::string& program) {
  ToolProcess tool({"--program", program});
  ASSERT_TRUE(tool.wait_until_ready(120s)) << tool.stderr_text();
  std::map<pid_t, std::string> expected;
  for (const HostileName& name : kNames) {
    ASSERT_LE(name.bytes.size(), 15u);
    expected[renamed_child_connecting(name.bytes)] = name.expected;
  }
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool.stop(SIGINT), 0) << tool.stderr_text();
  // events() fails the test on any line that is not one JSON object.
  std::map<pid_t, int> seen;
  for (const json& e : tool.events()) {
    auto it = expected.find(e.at("pid").get<pid_t>());
    if (it == expected.end()) continue;
    EXPECT_EQ(e.at("comm").get<std::string>(), it->second) << e.dump();
    ++seen[it->first];
  }
  for (const auto& [pid, comm] : expected) EXPECT_GT(seen[pid], 0) << "no event for " << json(comm).dump();
}

TEST(HostileData, RenamedProcessesUnderStates) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  expect_names_survive("states");
}

TEST(HostileData, RenamedProcessesUnderConnlat) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  expect_names_survive("connlat");
}

}  // namespace
}  // namespace tcptrace::testing
