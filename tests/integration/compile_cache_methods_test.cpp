// The compile cache with every attach method of `connlat`: a first start
// compiles the method's variant and stores it, a second loads it without the
// compiler and reports the same connects the same way. kfunc and kprobe are
// the variants whose compile (against net/sock.h) costs most; on a kernel
// that cannot attach them this test skips here and runs in the VM test
// (tests/vm/stock-kernel-tests).
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "attach_support.h"
#include "loopback.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Below /tmp: the VM test's guest has its root file system read-only and a
// tmpfs there.
struct CacheDir {
  CacheDir() {
    char name[] = "/tmp/tcptrace-cache-methods-XXXXXX";
    path = ::mkdtemp(name) ? name : "";
  }
  ~CacheDir() {
    std::error_code ignored;
    if (!path.empty()) std::filesystem::remove_all(path, ignored);
  }
  std::string path;
};

bool maps_compiler(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("libLLVM") != std::string::npos || line.find("tcptrace-bcc-compiler.so") != std::string::npos) {
      return true;
    }
  }
  return false;
}

// One run: an established and a refused connect, as (outcome, errno,
// family, pid, dport) per event, sorted; and whether the compiler was mapped.
struct ToolRun {
  bool skipped = false;
  std::string skip;
  std::string stderr_text;
  bool compiler_mapped = false;
  std::vector<std::tuple<std::string, int, int, int, int>> events;
};

ToolRun run_connlat(const std::string& method, const std::string& cache, uint16_t open_port, uint16_t closed_port) {
  ToolRun run;
  ToolProcess tool({"--program", "connlat", "--attach", method, "--cache-dir", cache, "--dport",
                    std::to_string(open_port) + "," + std::to_string(closed_port)});
  if (!tool.wait_until_ready(scaled(300s))) {
    const int status = tool.wait_exit(scaled(10s));
    run.stderr_text = tool.stderr_text();
    if (status == 1 && run.stderr_text.find("--attach " + method + ": ") != std::string::npos) {
      const CannotAttach verdict = cannot_attach(method, run.stderr_text);
      run.skipped = verdict.skip;
      run.skip = verdict.message;
      if (!verdict.skip) ADD_FAILURE() << verdict.message;
      return run;
    }
    ADD_FAILURE() << "connlat --attach " << method << " did not become ready (status " << status << "):\n"
                  << run.stderr_text;
    return run;
  }
  run.compiler_mapped = maps_compiler(tool.pid());
  { Socket established = connect_loopback(AF_INET, open_port); }
  EXPECT_LT(connect_loopback(AF_INET, closed_port).fd(), 0);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(tool.stop(SIGINT), 0) << tool.stderr_text();
  run.stderr_text = tool.stderr_text();
  for (const json& e : tool.events()) {
    run.events.emplace_back(e.at("outcome").get<std::string>(), e.at("errno").get<int>(), e.at("family").get<int>(),
                            e.at("pid").get<int>(), e.at("dport").get<int>());
  }
  std::sort(run.events.begin(), run.events.end());
  return run;
}

class CompileCacheMethods : public ::testing::TestWithParam<std::string> {};

TEST_P(CompileCacheMethods, WarmStartLoadsTheStoredVariant) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const std::string method = GetParam();
  CacheDir cache;
  ASSERT_FALSE(cache.path.empty());
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  ClosedPort closed(AF_INET);

  const ToolRun cold = run_connlat(method, cache.path, listener.local_port(), closed.port);
  if (cold.skipped) GTEST_SKIP() << cold.skip;
  ASSERT_NE(cold.stderr_text.find("tcptrace-bcc: cache: compiled "), std::string::npos) << cold.stderr_text;
  EXPECT_NE(cold.stderr_text.find("(absent); stored in " + cache.path), std::string::npos) << cold.stderr_text;
  EXPECT_TRUE(cold.compiler_mapped) << "a compiling start maps the compiler module";

  const ToolRun warm = run_connlat(method, cache.path, listener.local_port(), closed.port);
  ASSERT_FALSE(warm.skipped) << warm.skip;
  ASSERT_NE(warm.stderr_text.find("tcptrace-bcc: cache: loaded "), std::string::npos) << warm.stderr_text;
  EXPECT_NE(warm.stderr_text.find(", no compile"), std::string::npos) << warm.stderr_text;
  EXPECT_FALSE(warm.compiler_mapped) << "a cached start maps neither LLVM nor the compiler module";
  EXPECT_NE(warm.stderr_text.find("(attach: " + method + ")"), std::string::npos) << warm.stderr_text;

  const int self = static_cast<int>(::getpid());
  const std::vector<std::tuple<std::string, int, int, int, int>> expected = {
      {"established", 0, 4, self, listener.local_port()}, {"refused", 111, 4, self, closed.port}};
  EXPECT_EQ(cold.events, expected) << cold.stderr_text;
  EXPECT_EQ(warm.events, expected) << warm.stderr_text;
}

INSTANTIATE_TEST_SUITE_P(Methods, CompileCacheMethods, ::testing::Values("kfunc", "kprobe", "tracepoint"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tcptrace::testing
