// The rules for files the tool reads and writes as root (trusted_file.h),
// with the owner check turned on for whoever runs the test.
#include "trusted_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "program_source.h"

namespace tcptrace {
namespace {

namespace fs = std::filesystem;

class TrustedFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tcptrace-trusted-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    trust_.check_owners = true;
    trust_.trusted_owners = {0, geteuid()};
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name, const std::string& text = "int x;\n") {
    const std::string path = (dir_ / name).string();
    std::ofstream(path) << text;
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                              fs::perms::others_read);
    return path;
  }
  fs::path dir_;
  FileTrust trust_;
};

TEST_F(TrustedFile, ReadsAPlainFile) {
  auto text = read_trusted_file("--program-file", file("p.bpf.c"), 100, trust_);
  ASSERT_TRUE(text.ok()) << text.error().message;
  EXPECT_EQ(*text, "int x;\n");
}

TEST_F(TrustedFile, RefusesWhatIsNotARegularFileOrTooLarge) {
  const std::string fifo = (dir_ / "fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string link = (dir_ / "link").string();
  fs::create_symlink(file("target"), link);
  const std::string big = file("big", std::string(101, 'x'));
  for (const auto& [path, message] : std::vector<std::pair<std::string, std::string>>{
           {fifo, "is not a regular file (a FIFO, socket or device)"},
           {"/dev/zero", "is not a regular file"},
           {link, "is a symbolic link; give the file it points to"},
           {big, "is larger than 100 bytes"},
           {dir_.string(), "is a directory"},
           {(dir_ / "missing").string(), "does not exist"}}) {
    SCOPED_TRACE(path);
    auto text = read_trusted_file("--program-file", path, 100, trust_);
    ASSERT_FALSE(text.ok());
    EXPECT_EQ(text.error().exit_code, ExitCode::usage);
    EXPECT_NE(text.error().message.find(message), std::string::npos) << text.error().message;
  }
}

TEST_F(TrustedFile, RefusesWritableByOthersOrAnUntrustedOwner) {
  const std::string path = file("p.bpf.c");
  fs::permissions(path, fs::perms::group_write, fs::perm_options::add);
  auto text = read_trusted_file("--program-file", path, 100, trust_);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.error().exit_code, ExitCode::runtime);
  EXPECT_EQ(text.error().message, "--program-file: '" + path +
                                      "' is writable by group or others (mode 0664); refusing it as root (chmod go-w)");
  fs::permissions(path, fs::perms::group_write, fs::perm_options::remove);
  FileTrust others = trust_;
  others.trusted_owners = {geteuid() + 1};
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_NE(untrusted_reason(path, st, others).find("is owned by uid " + std::to_string(geteuid())),
            std::string::npos);
  // Not checked when the process is not root.
  others.check_owners = false;
  EXPECT_TRUE(read_trusted_file("--program-file", path, 100, others).ok());
}

TEST_F(TrustedFile, RefusesAFileInADirectoryOthersMayWrite) {
  const std::string path = file("p.bpf.c");
  fs::permissions(dir_, fs::perms::others_write, fs::perm_options::add);
  auto text = read_trusted_file("--program-file", path, 100, trust_);
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.error().message.find("'" + dir_.string() + "' is writable by group or others (mode 0702)"),
            std::string::npos)
      << text.error().message;
  // A sticky directory (like /tmp) may be: only an entry's owner replaces it.
  fs::permissions(dir_, fs::perms::sticky_bit, fs::perm_options::add);
  EXPECT_TRUE(read_trusted_file("--program-file", path, 100, trust_).ok());
}

TEST_F(TrustedFile, PrivateOutputIsMode0600AndNeverALinkOrFifo) {
  const std::string existing = file("raw", "old");
  auto fd = open_private_output("--record-raw", existing, trust_);
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  struct stat st {};
  ASSERT_EQ(fstat(fd->get(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_size, 0);
  const std::string link = (dir_ / "link").string();
  fs::create_symlink(existing, link);
  EXPECT_EQ(open_private_output("--record-raw", link, trust_).error().exit_code, ExitCode::usage);
  const std::string hard = (dir_ / "hard").string();
  fs::create_hard_link(existing, hard);
  auto linked = open_private_output("--record-raw", hard, trust_);
  ASSERT_FALSE(linked.ok());
  EXPECT_NE(linked.error().message.find("has other hard links"), std::string::npos);
  const std::string fifo = (dir_ / "fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto piped = open_private_output("--record-raw", fifo, trust_);
  ASSERT_FALSE(piped.ok());
  EXPECT_NE(piped.error().message.find("is not a regular file"), std::string::npos);
}

TEST(BuildTree, OnlyABinaryInsideTheBuildDirectoryCounts) {
  EXPECT_TRUE(running_from_build_tree("/src/build/tcptrace-bcc", "/src/build"));
  EXPECT_TRUE(running_from_build_tree("/src/build/sub/tcptrace-bcc", "/src/build/"));
  EXPECT_FALSE(running_from_build_tree("/usr/local/bin/tcptrace-bcc", "/src/build"));
  EXPECT_FALSE(running_from_build_tree("/src/build-asan/tcptrace-bcc", "/src/build"));
  EXPECT_FALSE(running_from_build_tree("", "/src/build"));
}

}  // namespace
}  // namespace tcptrace
