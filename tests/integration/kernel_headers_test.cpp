// What the tool does with kernel headers on this machine: a kheaders
// archive is unpacked by the host into a place of its own, never BCC's
// shared /tmp/kheaders-<release>; and the trees it makes for BCC are gone
// after every end of a run, SIGKILL during the compile included.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "temp_dir.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uid_t kNobody = 65534;

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string running_release() {
  utsname un{};
  uname(&un);
  return un.release;
}

std::vector<std::string> entries_of(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) names.push_back(entry.path().filename().string());
  return names;
}

void write_file(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// An archive shaped like /sys/kernel/kheaders.tar.xz whose kconfig.h (which
// BCC includes first in every compile) stops the compile with `marker`.
// Made with GNU tar and xz, as the kernel makes its own.
std::string make_fake_kheaders(const fs::path& dir, const std::string& marker) {
  const fs::path tree = dir / "fake-kheaders";
  write_file(tree / "include/linux/kconfig.h", "#error \"" + marker + "\"\n");
  write_file(tree / "arch/x86/include/asm/page.h", "/* fake */\n");
  const fs::path archive = dir / "kheaders.tar.xz";
  const std::string command = "tar --owner=0 --group=0 --numeric-owner -C " + tree.string() + " -cJf " +
                              archive.string() + " .";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  return archive.string();
}

// /tmp/kheaders-<release> made first by another user, as BCC 0.26 would
// find it: a tree whose kconfig.h marks any compile that reads it. Removed
// at the end of the test.
class PlantedKheaders {
 public:
  static constexpr const char* kMarker = "planted /tmp/kheaders headers reached the compile";
  PlantedKheaders() : path_("/tmp/kheaders-" + running_release()) {
    std::error_code ec;
    if (fs::exists(fs::symlink_status(path_, ec))) {
      // Left by an earlier run of this test: its marker says so.
      if (read_text(path_ / "include/linux/kconfig.h").find(kMarker) == std::string::npos) {
        problem_ = path_.string() + " exists and is not this test's: not touching it";
        return;
      }
      fs::remove_all(path_, ec);
    }
    write_file(path_ / "include/linux/kconfig.h", std::string("#error \"") + kMarker + "\"\n");
    write_file(path_ / "include/linux/planted.h", "/* planted */\n");
    for (const auto& entry : fs::recursive_directory_iterator(path_)) {
      if (::lchown(entry.path().c_str(), kNobody, kNobody) != 0) problem_ = "cannot chown " + entry.path().string();
    }
    if (::lchown(path_.c_str(), kNobody, kNobody) != 0) problem_ = "cannot chown " + path_.string();
    made_ = true;
  }
  ~PlantedKheaders() {
    std::error_code ec;
    if (made_) fs::remove_all(path_, ec);
  }
  PlantedKheaders(const PlantedKheaders&) = delete;
  PlantedKheaders& operator=(const PlantedKheaders&) = delete;

  const fs::path& path() const { return path_; }
  const std::string& problem() const { return problem_; }

 private:
  fs::path path_;
  std::string problem_;
  bool made_ = false;
};

TEST(KernelHeaders, KheadersArchiveIsUnpackedByTheHostNeverFromAPlantedTmpDirectory) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string own_marker = "tcptrace-test: the host's own unpacking of the archive";
  const std::string archive = make_fake_kheaders(dir.path(), own_marker);
  PlantedKheaders planted;
  ASSERT_EQ(planted.problem(), "");

  // The test-only stand-in for /sys/kernel/kheaders.tar.xz, used before any
  // installed tree. No TMPDIR: BCC 0.26 looks for $TMPDIR/kheaders-<release>,
  // /tmp's when TMPDIR is unset, as it is for root on most machines.
  ToolProcess tool({"env", "-u", "TMPDIR", "TCPTRACE_TEST_KHEADERS_ARCHIVE=" + archive},
                   {"--program", "states", "--check"});
  const int status = tool.wait_exit(scaled(60s));
  const std::string err = tool.stderr_text();
  EXPECT_EQ(status, 1) << err;
  EXPECT_NE(err.find("using the running kernel's built-in headers (" + archive + ")"), std::string::npos) << err;
  EXPECT_NE(err.find(own_marker), std::string::npos) << "the compile did not read the host's own tree\n" << err;
  EXPECT_EQ(err.find(PlantedKheaders::kMarker), std::string::npos) << "BCC used the planted directory\n" << err;
  EXPECT_EQ(tool.stdout_text(), "");

  // The planted tree is as it was, still another user's.
  EXPECT_EQ(fs::status(planted.path()).type(), fs::file_type::directory);
  struct stat st {};
  ASSERT_EQ(::stat(planted.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kNobody);
  std::vector<std::string> planted_files = entries_of(planted.path() / "include/linux");
  std::sort(planted_files.begin(), planted_files.end());
  EXPECT_EQ(planted_files, (std::vector<std::string>{"kconfig.h", "planted.h"}));
  EXPECT_NE(read_text(planted.path() / "include/linux/kconfig.h").find(PlantedKheaders::kMarker), std::string::npos);
}

// A split tree (build + source) the tool merges for BCC: any
// /lib/modules/<release> of this machine with both halves.
std::string split_header_tree() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/lib/modules", ec)) {
    if (fs::is_directory(entry.path() / "build", ec) && fs::is_directory(entry.path() / "source", ec) &&
        fs::is_regular_file(entry.path() / "source/include/linux/kconfig.h", ec)) {
      return entry.path().string();
    }
  }
  return "";
}

// A signal while BCC compiles (after the header line, before "ready"):
// SIGINT and SIGTERM end the run with status 0, SIGKILL kills it; either
// way no merged header tree is left anywhere and nothing stays loaded.
class SignalDuringCompile : public ::testing::TestWithParam<int> {};

TEST_P(SignalDuringCompile, LeavesNoHeaderTree) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const int signal = GetParam();
  const std::string tree = split_header_tree();
  if (tree.empty()) {
    if (running_in_ci()) FAIL() << "CI=true: no split header tree under /lib/modules";
    GTEST_SKIP() << "no split header tree (build/ + source/) under /lib/modules";
  }
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const fs::path tmpdir = dir.path() / "tmp";
  fs::create_directories(tmpdir);
  const BpfObjectIds before = loaded_bpf_objects();
  ToolProcess tool({"env", "TMPDIR=" + tmpdir.string()},
                   {"--program", "states", "--sport", "1", "--kernel-headers", tree});
  // The tool names the headers it uses, then compiles (seconds here).
  ASSERT_TRUE(tool.wait_for_stderr_line(line_starting_with("tcptrace-bcc: using kernel headers "), scaled(60s)))
      << tool.stderr_text();
  std::this_thread::sleep_for(100ms);
  const int status = tool.stop(signal, scaled(60s));
  const std::string err = tool.stderr_text();
  ASSERT_EQ(err.find(kReadyLinePrefix), std::string::npos) << "the signal came after the compile\n" << err;
  if (signal == SIGKILL) {
    EXPECT_EQ(status, 128 + SIGKILL);
  } else {
    EXPECT_EQ(status, 0) << err;
    EXPECT_NE(err.find(std::string("stopped by ") + (signal == SIGINT ? "SIGINT" : "SIGTERM") + " during start-up"),
              std::string::npos)
        << err;
  }
  EXPECT_EQ(tool.stdout_text(), "");
  EXPECT_EQ(entries_of(tmpdir), std::vector<std::string>{}) << "left in TMPDIR\n" << err;
  EXPECT_EQ(wait_until_released(before), "") << "left in the kernel\n" << err;
}

INSTANTIATE_TEST_SUITE_P(Signals, SignalDuringCompile, ::testing::Values(SIGINT, SIGTERM, SIGKILL),
                         [](const auto& info) {
                           return info.param == SIGTERM ? "SIGTERM" : info.param == SIGINT ? "SIGINT" : "SIGKILL";
                         });

}  // namespace
}  // namespace tcptrace::testing
