// Runs the built tcptrace-bcc as a child process for integration tests and
// collects its stdout (event lines) and stderr (diagnostics) as they come.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace tcptrace::testing {

std::string tool_binary();

// How the tool's ready line starts (host/app.cpp: report("ready: ...")).
inline constexpr std::string_view kReadyLinePrefix = "tcptrace-bcc: ready: ";

// Line matchers for ToolProcess::wait_for_stderr_line.
std::function<bool(std::string_view)> line_starting_with(std::string prefix);
std::function<bool(std::string_view)> line_ending_with(std::string suffix);

// Every timeout below is multiplied by TCPTRACE_TEST_TIMEOUT_SCALE (scaled()).
class ToolProcess {
 public:
  explicit ToolProcess(std::vector<std::string> args);
  // Runs `wrapper` (a command such as setpriv or unshare, found in PATH)
  // with the tool binary and `args` appended.
  // `binary` replaces the built tool (e.g. a copy others may execute).
  ToolProcess(std::vector<std::string> wrapper, std::vector<std::string> args,
              std::string binary = tool_binary());
  ~ToolProcess();  // kills the tool if it still runs
  ToolProcess(const ToolProcess&) = delete;
  ToolProcess& operator=(const ToolProcess&) = delete;

  // Waits until stderr contains `needle` anywhere (also inside a word or
  // across lines) or the tool exits. True if found. For the tool's own
  // lines, whose form is known, wait_for_stderr_line is exact.
  bool wait_for_stderr(const std::string& needle, std::chrono::milliseconds timeout);
  // Waits until a complete stderr line (without its newline) satisfies
  // `matches`, or the tool exits. True if one does.
  bool wait_for_stderr_line(const std::function<bool(std::string_view line)>& matches,
                            std::chrono::milliseconds timeout);
  // Waits for the tool's ready line (kReadyLinePrefix), which it prints once
  // every probe is attached.
  bool wait_until_ready(std::chrono::milliseconds timeout);
  // Waits until at least `lines` complete stdout lines arrived.
  bool wait_for_lines(size_t lines, std::chrono::milliseconds timeout);
  // Sends `signal` and waits for the exit; returns the exit status, or
  // 128+signal when it died of a signal, or -1 on timeout (then killed).
  int stop(int signal, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Waits for the tool to exit by itself.
  int wait_exit(std::chrono::milliseconds timeout);

  // Stops reading the tool's stderr (after a read under way, if any), so
  // the pipe fills up as behind a reader that stalled; resume_stderr()
  // reads on. stop() and wait_exit() need stderr read when the tool writes
  // more at exit; ~ToolProcess kills the tool and reads to the end.
  void pause_stderr();
  void resume_stderr();

  pid_t pid() const { return pid_; }
  std::string stdout_text();
  std::string stderr_text();
  std::vector<std::string> stdout_lines();
  // Every stdout line parsed; a line that is not one JSON object fails the
  // calling test (ADD_FAILURE) and is skipped.
  std::vector<nlohmann::json> events();

 private:
  // Waits until `found` holds for the stderr collected so far, or the tool
  // exits.
  bool wait_for_stderr_text(const std::function<bool(const std::string& text)>& found,
                            std::chrono::milliseconds timeout);
  void read_loop(int fd, std::string& sink);
  int reap(std::chrono::milliseconds timeout);

  pid_t pid_ = -1;
  int exit_status_ = -1;
  bool exited_ = false;
  bool stderr_paused_ = false;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string stdout_;
  std::string stderr_;
  std::thread stdout_reader_;
  std::thread stderr_reader_;
};

// Starts the tool with `args` and waits (up to two minutes, scaled: it
// compiles) for its "ready" line; nullptr, with the test failed, when it does
// not come.
std::unique_ptr<ToolProcess> start_ready(std::vector<std::string> args);

// `timeout` times TCPTRACE_TEST_TIMEOUT_SCALE (default 1). Every wait of
// ToolProcess is scaled: scripts/vm-test raises it because under software
// emulation compiling a program takes over a minute.
std::chrono::milliseconds scaled(std::chrono::milliseconds timeout);

// The tool binary and the source tree, as built.
std::string tool_binary();

// Integration tests need root and a kernel with BPF. Returns an empty string
// when the test can run; otherwise the reason it cannot.
std::string missing_privileges();

// Skips the test (or fails it under CI=true, where it must run).
#define TCPTRACE_REQUIRE_PRIVILEGES()                                              \
  do {                                                                             \
    const std::string reason = ::tcptrace::testing::missing_privileges();          \
    if (!reason.empty()) {                                                         \
      if (::tcptrace::testing::running_in_ci()) FAIL() << "CI=true: " << reason;   \
      GTEST_SKIP() << reason;                                                      \
    }                                                                              \
  } while (0)

bool running_in_ci();

// IDs of every BPF program loaded in the kernel (BPF_PROG_GET_NEXT_ID).
std::set<uint32_t> loaded_bpf_program_ids();

// IDs of every BPF program, map and link in the kernel.
struct BpfObjectIds {
  std::set<uint32_t> programs, maps, links;
};
BpfObjectIds loaded_bpf_objects();

// Waits (up to five seconds, scaled) until every program, map and link that
// is in the kernel now but not in `before` is gone: the kernel frees them
// once their last fd closes, a moment after the process that held them
// exits (map frees are deferred to a work queue). Returns those still there,
// described ("program 12, map 40"), or an empty string.
std::string wait_until_released(const BpfObjectIds& before);

// This process's comm (/proc/self/comm), as the kernel reports it.
std::string own_comm();

}  // namespace tcptrace::testing
