// ToolProcess's wait for the tool's ready line, against a stand-in for the
// tool (a shell script) that writes lines which only contain "ready" and a
// ready line in two parts.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

TEST(ReadyLine, OnlyTheToolsCompleteReadyLineCounts) {
  const fs::path go = fs::temp_directory_path() / ("tcptrace-ready-go-" + std::to_string(getpid()));
  fs::remove(go);
  // Words that contain "ready", then the start of the ready line; the rest
  // of it once `go` exists.
  const std::string script =
      "echo 'tcptrace-bcc: 3 runs skipped (recursion_misses: the program was already running on that CPU)' >&2\n"
      "echo 'ready: not the tool' >&2\n"
      "printf 'tcptrace-bcc: ready: program conn' >&2\n"
      "while [ ! -e '" + go.string() + "' ]; do sleep 0.02; done\n"
      "echo 'lat, 2 probes attached' >&2\n"
      "exec sleep 30\n";
  ToolProcess tool({}, {"-c", script}, "/bin/sh");
  ASSERT_TRUE(tool.wait_for_stderr("tcptrace-bcc: ready: program conn", 10s)) << tool.stderr_text();
  EXPECT_FALSE(tool.wait_until_ready(300ms)) << tool.stderr_text();
  std::ofstream(go).close();
  EXPECT_TRUE(tool.wait_until_ready(10s)) << tool.stderr_text();
  EXPECT_EQ(tool.stop(SIGKILL), 128 + SIGKILL);
  fs::remove(go);
}

}  // namespace
}  // namespace tcptrace::testing
