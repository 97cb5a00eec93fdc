// The host's own unpacking of /sys/kernel/kheaders.tar.xz: what it writes,
// and that no entry reaches outside the target directory.
#include "kheaders_archive.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <lzma.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kernel_headers.h"

namespace tcptrace {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// One tar entry as GNU tar writes it ("ustar  " magic), built byte by byte
// so that entries tar itself would refuse to write can be tested.
struct Entry {
  std::string name;
  char type = '0';
  std::string data;
  std::string link;
};

void put_octal(std::string& block, size_t offset, size_t width, uint64_t value) {
  char text[32];
  std::snprintf(text, sizeof text, "%0*llo", static_cast<int>(width - 1), static_cast<unsigned long long>(value));
  std::memcpy(&block[offset], text, width - 1);
}

std::string header_block(const std::string& name, char type, uint64_t size, const std::string& link) {
  std::string block(512, '\0');
  std::memcpy(&block[0], name.data(), std::min<size_t>(name.size(), 100));
  put_octal(block, 100, 8, type == '5' ? 0755 : 0644);
  put_octal(block, 108, 8, 0);
  put_octal(block, 116, 8, 0);
  put_octal(block, 124, 12, size);
  put_octal(block, 136, 12, 0);
  block[156] = type;
  std::memcpy(&block[157], link.data(), std::min<size_t>(link.size(), 100));
  std::memcpy(&block[257], "ustar  ", 8);
  std::memset(&block[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : block) sum += c;
  char text[8];
  std::snprintf(text, sizeof text, "%06o", sum);
  std::memcpy(&block[148], text, 7);
  return block;
}

std::string padded(std::string data) {
  data.resize((data.size() + 511) / 512 * 512, '\0');
  return data;
}

std::string tar_of(const std::vector<Entry>& entries) {
  std::string out;
  for (const Entry& e : entries) {
    if (e.name.size() > 100) {  // GNU long name: a 'L' entry holding it
      out += header_block("././@LongLink", 'L', e.name.size() + 1, "");
      out += padded(e.name + '\0');
    }
    out += header_block(e.name, e.type, e.data.size(), e.link);
    out += padded(e.data);
  }
  out += std::string(1024, '\0');
  return out;
}

std::string xz_of(const std::string& data) {
  std::vector<uint8_t> out(data.size() + data.size() / 2 + 4096);
  size_t out_pos = 0;
  const lzma_ret ret = lzma_easy_buffer_encode(0, LZMA_CHECK_CRC32, nullptr,
                                               reinterpret_cast<const uint8_t*>(data.data()), data.size(), out.data(),
                                               &out_pos, out.size());
  EXPECT_EQ(ret, LZMA_OK);
  return std::string(reinterpret_cast<const char*>(out.data()), out_pos);
}

class KheadersArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tcptrace-kheaders-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = fs::canonical(pattern);
    fs::create_directories(root_ / "target");
    dir_fd_ = ::open((root_ / "target").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(dir_fd_, 0);
  }
  void TearDown() override {
    ::close(dir_fd_);
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  std::string write_archive(const std::string& bytes) {
    const fs::path path = root_ / "kheaders.tar.xz";
    std::ofstream(path, std::ios::binary) << bytes;
    return path.string();
  }

  Result<UnpackedArchive> unpack(const std::vector<Entry>& entries) {
    return unpack_kheaders_archive(write_archive(xz_of(tar_of(entries))), dir_fd_);
  }

  // Every path under root_ outside target/ and the archive: what an escape
  // would have made.
  std::vector<std::string> outside_target() {
    std::vector<std::string> found;
    for (const auto& entry : fs::recursive_directory_iterator(root_)) {
      const fs::path rel = entry.path().lexically_relative(root_);
      const std::string first = rel.begin()->string();
      if (first != "target" && first != "kheaders.tar.xz") found.push_back(rel.string());
    }
    return found;
  }

  fs::path root_;
  int dir_fd_ = -1;
};

TEST_F(KheadersArchiveTest, UnpacksDirectoriesFilesAndLongNames) {
  const std::string long_dir = "./include/" + std::string(120, 'd');
  auto unpacked = unpack({
      {"./", '5', "", ""},
      {"./include/", '5', "", ""},
      {"./include/linux/", '5', "", ""},
      {"./include/linux/kconfig.h", '0', "#define KCONFIG 1\n", ""},
      {"./arch/x86/include/asm/page.h", '0', std::string(70000, 'p'), ""},  // parents not listed; > 64 KiB
      {long_dir + "/deep.h", '0', "/* deep */\n", ""},
      {"./include/empty.h", '0', "", ""},
  });
  ASSERT_TRUE(unpacked.ok()) << unpacked.error().message;
  const fs::path t = root_ / "target";
  EXPECT_EQ(read_text(t / "include/linux/kconfig.h"), "#define KCONFIG 1\n");
  EXPECT_EQ(read_text(t / "arch/x86/include/asm/page.h"), std::string(70000, 'p'));
  EXPECT_EQ(read_text(t / long_dir / "deep.h"), "/* deep */\n");
  EXPECT_TRUE(fs::is_regular_file(t / "include/empty.h"));
  EXPECT_EQ(unpacked->files, 4u);
  EXPECT_EQ(unpacked->skipped, 0u);
  EXPECT_EQ(fs::status(t / "include/linux/kconfig.h").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
}

TEST_F(KheadersArchiveTest, ArchiveMadeByGnuTar) {
  // The kernel makes its archive with GNU tar and xz (kernel/gen_kheaders.sh).
  const fs::path src = root_ / "src";
  const std::string long_name = "include/" + std::string(110, 'x') + "/" + std::string(60, 'y') + ".h";
  fs::create_directories((src / long_name).parent_path());
  std::ofstream(src / long_name) << "/* long */\n";
  fs::create_directories(src / "include/linux");
  std::ofstream(src / "include/linux/kconfig.h") << "/* kconfig */\n";
  const std::string archive = (root_ / "gnu.tar.xz").string();
  const std::string command = "tar --owner=0 --group=0 --numeric-owner --sort=name -C " + src.string() +
                              " -cJf " + archive + " . 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  auto unpacked = unpack_kheaders_archive(archive, dir_fd_);
  ASSERT_TRUE(unpacked.ok()) << unpacked.error().message;
  EXPECT_EQ(read_text(root_ / "target" / long_name), "/* long */\n");
  EXPECT_EQ(read_text(root_ / "target/include/linux/kconfig.h"), "/* kconfig */\n");
  EXPECT_EQ(unpacked->files, 2u);
}

TEST_F(KheadersArchiveTest, RefusesAbsoluteNames) {
  auto unpacked = unpack({{"/" + (root_ / "escaped.h").relative_path().string(), '0', "x", ""}});
  ASSERT_FALSE(unpacked.ok());
  EXPECT_NE(unpacked.error().message.find("refusing"), std::string::npos) << unpacked.error().message;
  EXPECT_EQ(outside_target(), std::vector<std::string>{});
}

TEST_F(KheadersArchiveTest, RefusesDotDot) {
  for (const std::string name : {"../escaped.h", "./include/../../escaped.h", "include/..", "../"}) {
    SCOPED_TRACE(name);
    auto unpacked = unpack({{name, name.back() == '/' ? '5' : '0', "x", ""}});
    ASSERT_FALSE(unpacked.ok());
    EXPECT_EQ(outside_target(), std::vector<std::string>{});
  }
}

TEST_F(KheadersArchiveTest, LinksAreNotUnpackedSoNothingLeadsOutside) {
  // A link to a directory outside, then a file "through" it: the link is
  // skipped, so the file lands in a directory of the tree's own.
  fs::create_directories(root_ / "outside");
  auto unpacked = unpack({
      {"./escape", '2', "", (root_ / "outside").string()},
      {"./escape/planted.h", '0', "x", ""},
      {"./hard", '1', "", "/etc/passwd"},
      {"./fifo", '6', "", ""},
  });
  ASSERT_TRUE(unpacked.ok()) << unpacked.error().message;
  EXPECT_EQ(unpacked->skipped, 3u);
  EXPECT_TRUE(fs::is_empty(root_ / "outside"));
  EXPECT_TRUE(fs::is_directory(fs::symlink_status(root_ / "target/escape")));
  EXPECT_FALSE(fs::exists(fs::symlink_status(root_ / "target/hard")));
  EXPECT_FALSE(fs::exists(fs::symlink_status(root_ / "target/fifo")));
}

TEST_F(KheadersArchiveTest, DamagedArchivesFail) {
  const std::string good = tar_of({{"./a.h", '0', "a", ""}});
  {
    std::string bad_checksum = good;
    bad_checksum[0] = 'b';
    auto unpacked = unpack_kheaders_archive(write_archive(xz_of(bad_checksum)), dir_fd_);
    ASSERT_FALSE(unpacked.ok());
    EXPECT_NE(unpacked.error().message.find("checksum"), std::string::npos) << unpacked.error().message;
  }
  {
    auto unpacked = unpack_kheaders_archive(write_archive(xz_of(good.substr(0, 512))), dir_fd_);
    ASSERT_FALSE(unpacked.ok());
  }
  {
    auto unpacked = unpack_kheaders_archive(write_archive(good), dir_fd_);  // not compressed
    ASSERT_FALSE(unpacked.ok());
    EXPECT_NE(unpacked.error().message.find("xz"), std::string::npos) << unpacked.error().message;
  }
  {
    auto unpacked = unpack_kheaders_archive((root_ / "missing.tar.xz").string(), dir_fd_);
    ASSERT_FALSE(unpacked.ok());
  }
}

// unpack_kheaders: the choice hands BCC the host's own tree, which is gone
// when the last choice holding it is.
void check_unpack_kheaders(const fs::path& root, PrivateHeaderSpace::Kind kind) {
  const fs::path archive = root / "kheaders.tar.xz";
  std::ofstream(archive, std::ios::binary)
      << xz_of(tar_of({{"./include/linux/kconfig.h", '0', "#define TCPTRACE_UNPACKED 1\n", ""}}));
  HeaderChoice choice;
  choice.match = HeaderMatch::kheaders;
  choice.kheaders_archive = archive.string();
  std::string tree_path;
  {
    auto unpacked = unpack_kheaders(choice, kind);
    ASSERT_TRUE(unpacked.ok()) << unpacked.error().message;
    ASSERT_TRUE(unpacked->tree.has_value());
    ASSERT_TRUE(unpacked->unpacked);
    EXPECT_TRUE(unpacked->tree->single_tree());
    tree_path = unpacked->tree->build_dir;
    EXPECT_EQ(read_text(fs::path(tree_path) / "include/linux/kconfig.h"), "#define TCPTRACE_UNPACKED 1\n");
    if (kind == PrivateHeaderSpace::Kind::detached) {
      EXPECT_EQ(tree_path.rfind("/proc/self/fd/", 0), 0u) << tree_path;
    } else {
      EXPECT_EQ(fs::path(tree_path).parent_path(), root / "tmp") << "honours TMPDIR";
      EXPECT_EQ(fs::status(tree_path).permissions() & fs::perms::all, fs::perms::owner_all);
    }
    HeaderChoice copy = *unpacked;  // shares the unpacked tree
    unpacked = runtime_error("dropped");
    EXPECT_TRUE(fs::is_regular_file(fs::path(tree_path) / "include/linux/kconfig.h"));
  }
  EXPECT_FALSE(fs::exists(fs::path(tree_path) / "include/linux/kconfig.h")) << "gone with the last choice";
}

TEST_F(KheadersArchiveTest, UnpackKheadersIntoAPrivateDirectory) {
  fs::create_directories(root_ / "tmp");
  const char* saved = std::getenv("TMPDIR");
  const std::string saved_text = saved ? saved : "";
  setenv("TMPDIR", (root_ / "tmp").c_str(), 1);
  check_unpack_kheaders(root_, PrivateHeaderSpace::Kind::directory);
  if (saved) {
    setenv("TMPDIR", saved_text.c_str(), 1);
  } else {
    unsetenv("TMPDIR");
  }
  EXPECT_TRUE(fs::is_empty(root_ / "tmp"));
}

TEST_F(KheadersArchiveTest, UnpackKheadersIntoADetachedTmpfs) {
  if (!PrivateHeaderSpace::create(PrivateHeaderSpace::Kind::detached).ok()) {
    GTEST_SKIP() << "this process cannot make a detached tmpfs (CAP_SYS_ADMIN, Linux 5.2)";
  }
  check_unpack_kheaders(root_, PrivateHeaderSpace::Kind::detached);
}

TEST_F(KheadersArchiveTest, ArchiveWithoutKconfigIsRefused) {
  // BCC would turn to /tmp/kheaders-<release> for a tree without it.
  const fs::path archive = root_ / "kheaders.tar.xz";
  std::ofstream(archive, std::ios::binary) << xz_of(tar_of({{"./include/linux/tcp.h", '0', "", ""}}));
  HeaderChoice choice;
  choice.match = HeaderMatch::kheaders;
  choice.kheaders_archive = archive.string();
  auto unpacked = unpack_kheaders(choice);
  ASSERT_FALSE(unpacked.ok());
  EXPECT_NE(unpacked.error().message.find("kconfig.h"), std::string::npos) << unpacked.error().message;
}

}  // namespace
}  // namespace tcptrace
