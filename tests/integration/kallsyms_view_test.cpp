// The compile thread's private view of /proc/kallsyms (host/kallsyms_view.h):
// the thread sees the short file, the rest of the process and the machine
// keep the real one, and nothing is left behind.
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "kallsyms_view.h"
#include "kernel_probe.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

std::string read_whole(const std::string& path) {
  std::ifstream file(path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

size_t line_count(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

std::set<std::string> leftover_view_files() {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator("/tmp")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("tcptrace-kallsyms-", 0) == 0) names.insert(name);
  }
  return names;
}

TEST(KallsymsView, TheCompileThreadSeesTheViewAndNothingElseDoes) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const std::set<std::string> files_before = leftover_view_files();
  const std::string text = kallsyms_view_text({.kernel = true, .user = true});
  std::string seen, thread_mounts;
  const bool viewed = run_with_kallsyms_view(text, [&] {
    seen = read_whole("/proc/kallsyms");
    thread_mounts = read_whole("/proc/thread-self/mountinfo");
  });
  ASSERT_TRUE(viewed);
  EXPECT_EQ(seen, "ffffffff81000000 T bpf_probe_read_kernel\nffffffff81000010 T bpf_probe_read_user\n");
  EXPECT_NE(thread_mounts.find(" /proc/kallsyms "), std::string::npos) << thread_mounts;
  // The process (and with it the machine) still has the real file, and no
  // mount of it.
  EXPECT_GT(line_count(read_whole("/proc/kallsyms")), 1000u);
  EXPECT_EQ(read_whole("/proc/self/mountinfo").find(" /proc/kallsyms "), std::string::npos);
  EXPECT_EQ(read_whole("/proc/1/mountinfo").find(" /proc/kallsyms "), std::string::npos);
  EXPECT_EQ(leftover_view_files(), files_before);
}

TEST(KallsymsView, WithoutThePrivilegeTheWorkRunsOnTheRealFile) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // nobody: no CAP_SYS_ADMIN, so unshare(CLONE_NEWNS) fails.
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) _exit(10);
    std::string seen;
    const bool viewed = run_with_kallsyms_view("ffffffff81000000 T x\n", [&] { seen = read_whole("/proc/kallsyms"); });
    if (viewed) _exit(11);
    if (line_count(seen) < 1000) _exit(12);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: could not drop privileges, 11: view set up anyway, 12: work saw no kallsyms";
}

TEST(KallsymsView, EveryKernelSince55HasBothProbeReadHelpers) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  utsname name{};
  ASSERT_EQ(uname(&name), 0);
  int major = 0, minor = 0;
  ASSERT_EQ(std::sscanf(name.release, "%d.%d", &major, &minor), 2);
  const ProbeReadHelpers helpers = probe_read_helpers();
  const bool expected = major > 5 || (major == 5 && minor >= 5);
  EXPECT_EQ(helpers.kernel, expected) << name.release;
  EXPECT_EQ(helpers.user, expected) << name.release;
  // And the real kallsyms agrees, which is what BCC would have read.
  const std::string real = read_whole("/proc/kallsyms");
  EXPECT_EQ(real.find(" bpf_probe_read_kernel\n") != std::string::npos, helpers.kernel);
}

}  // namespace
}  // namespace tcptrace::testing
