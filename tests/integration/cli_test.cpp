// The tool's contract at its edges: exit statuses, one-line errors on stderr,
// nothing on stdout but events, and a quiet exit when the reader goes away.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "loopback.h"
#include "temp_dir.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using namespace std::chrono_literals;

struct Outcome {
  int status;
  std::string out;
  std::string err;
};

Outcome run_to_end(std::vector<std::string> args) {
  ToolProcess tool(std::move(args));
  const int status = tool.wait_exit(120s);
  return {status, tool.stdout_text(), tool.stderr_text()};
}

size_t line_count(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

TEST(Cli, UsageErrorsExitTwoWithOneLine) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--program", "states", "--sport", "70000"},
           {"--program", "states", "-4", "-6"},
           {"--program", "states", "--frobnicate"},
           {"--program", "states", "--count", "0"},
       }) {
    const Outcome r = run_to_end(args);
    EXPECT_EQ(r.status, 2) << args.back() << ": " << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(line_count(r.err), 1u) << r.err;
    EXPECT_EQ(r.err.rfind("tcptrace-bcc: ", 0), 0u) << r.err;
  }
}

TEST(Cli, UnknownProgramListsTheKnownOnes) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const Outcome r = run_to_end({"--program", "nosuch"});
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("unknown program 'nosuch' (known: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("states"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(Cli, ClosedStdoutEndsTheRunWithStatusZero) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  // The tool's stdout is a pipe whose reader closes after the first line,
  // like `tcptrace-bcc ... | head -1`.
  int out[2];
  ASSERT_EQ(pipe(out), 0);
  int err[2];
  ASSERT_EQ(pipe(err), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    close(out[0]);
    close(err[0]);
    execl(tool_binary().c_str(), "tcptrace-bcc", "--program", "states", nullptr);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  // Wait for the ready line on stderr.
  std::string err_text;
  char buf[4096];
  while (err_text.find(std::string(kReadyLinePrefix)) == std::string::npos) {
    ssize_t n = read(err[0], buf, sizeof buf);
    ASSERT_GT(n, 0) << err_text;
    err_text.append(buf, static_cast<size_t>(n));
  }
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  // Read one line of events, then close the read end.
  std::string line;
  for (int i = 0; i < 20 && line.find('\n') == std::string::npos; ++i) {
    Socket client = connect_loopback(AF_INET, listener.local_port());
    Socket server = accept_one(listener);
    ssize_t n = read(out[0], buf, sizeof buf);
    if (n > 0) line.append(buf, static_cast<size_t>(n));
  }
  ASSERT_NE(line.find('\n'), std::string::npos);
  close(out[0]);
  // More traffic: the next write hits EPIPE.
  int status = -1;
  for (int i = 0; i < 100; ++i) {
    Socket client = connect_loopback(AF_INET, listener.local_port());
    Socket server = accept_one(listener);
    std::this_thread::sleep_for(50ms);
    if (waitpid(pid, &status, WNOHANG) == pid) break;
  }
  if (!WIFEXITED(status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    FAIL() << "the tool did not exit after its reader went away";
  }
  EXPECT_EQ(WEXITSTATUS(status), 0);
  ssize_t n;
  while ((n = read(err[0], buf, sizeof buf)) > 0) err_text.append(buf, static_cast<size_t>(n));
  close(err[0]);
  EXPECT_EQ(err_text.find("cannot write"), std::string::npos) << err_text;
  EXPECT_NE(err_text.find("events,"), std::string::npos) << err_text;
}

// A copy of the tool outside its build tree is an installed one: it looks
// for its programs beside itself (../share/tcptrace-bcc) and never in the
// source tree it was built from. --list needs no root and loads nothing.
TEST(Cli, AnInstalledCopyNeverReadsTheBuildTreesPrograms) {
  const TempDir prefix("tcptrace-installed");
  ASSERT_FALSE(prefix.path().empty());
  namespace fs = std::filesystem;
  fs::create_directories(prefix.path() / "bin");
  const std::string copy = (prefix.path() / "bin" / "tcptrace-bcc").string();
  fs::copy_file(tool_binary(), copy);
  {
    ToolProcess tool({}, {"--list"}, copy);
    EXPECT_EQ(tool.wait_exit(30s), 1) << tool.stderr_text();
    EXPECT_NE(tool.stderr_text().find("cannot find the installed programs and tcptrace_filter.h (looked in " +
                                      (prefix.path() / "share/tcptrace-bcc/include").string() + ")"),
              std::string::npos)
        << tool.stderr_text();
    EXPECT_EQ(tool.stdout_text(), "");
  }
  // Installed beside it, as `cmake --install` lays them out, they are found.
  const fs::path share = prefix.path() / "share/tcptrace-bcc";
  fs::create_directories(share / "programs");
  fs::create_directories(share / "include");
  const fs::path source = TCPTRACE_SOURCE_DIR;
  fs::copy_file(source / "programs/states.bpf.c", share / "programs/states.bpf.c");
  fs::copy_file(source / "filters/tcptrace_filter.h", share / "include/tcptrace_filter.h");
  ToolProcess tool({}, {"--list"}, copy);
  EXPECT_EQ(tool.wait_exit(30s), 0) << tool.stderr_text();
  EXPECT_EQ(tool.stdout_text().rfind("states ", 0), 0u) << tool.stdout_text();
  EXPECT_EQ(tool.stdout_text().find("connlat"), std::string::npos) << "only the installed program";
}

// --record-raw writes a private file: mode 0600 even when the file was
// there before with another mode, emptied first.
TEST(Cli, RecordRawFileIsPrivate) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const TempDir dir("tcptrace-raw");
  const std::string path = (dir.path() / "samples.raw").string();
  std::ofstream(path) << "old contents";
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                                         std::filesystem::perms::group_read | std::filesystem::perms::others_read);
  const Outcome r = run_to_end({"--program", "states", "--sport", "1", "--duration", "0.2", "--record-raw", path});
  EXPECT_EQ(r.status, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_size, 0) << "no event on port 1, and the old contents are gone";
}

}  // namespace
}  // namespace tcptrace::testing
