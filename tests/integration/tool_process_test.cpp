// ToolProcess against stand-ins for the tool (shell scripts): the wait for
// the ready line, and the tool's end when the test process is killed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <thread>

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

// Whether `pid` has ended: gone, or a zombie nobody reaped yet.
bool process_ended(pid_t pid) {
  if (kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t end_of_comm = line.rfind(')');
  return end_of_comm != std::string::npos && line.compare(end_of_comm, 4, ") Z ") == 0;
}

// A test process that ctest's TIMEOUT kills runs no destructor; its tool
// must not outlive it (with probes attached, in a real run).
TEST(ToolProcessLifetime, ToolEndsWithAKilledTestProcess) {
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  const pid_t test_process = fork();
  if (test_process == 0) {
    close(report[0]);
    ToolProcess tool({}, {"-c", "exec sleep 60"}, "/bin/sh");
    const pid_t tool_pid = tool.pid();
    if (write(report[1], &tool_pid, sizeof tool_pid) != sizeof tool_pid) _exit(1);
    pause();
    _exit(0);
  }
  close(report[1]);
  pid_t tool_pid = 0;
  ASSERT_EQ(read(report[0], &tool_pid, sizeof tool_pid), static_cast<ssize_t>(sizeof tool_pid));
  close(report[0]);
  ASSERT_FALSE(process_ended(tool_pid));
  kill(test_process, SIGKILL);
  waitpid(test_process, nullptr, 0);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!process_ended(tool_pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(process_ended(tool_pid)) << "the tool (pid " << tool_pid << ") outlived its test process";
  if (!process_ended(tool_pid)) kill(tool_pid, SIGKILL);
}

}  // namespace
}  // namespace tcptrace::testing
