#include "kernel_headers.h"

#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

namespace tcptrace {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRunning = "6.18.44-test";

::testing::AssertionResult Contains(const std::string& text, const std::string& needle) {
  if (text.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << needle << "' not found in: " << text;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Fake /lib/modules, /usr/src and kheaders archive under a private temp dir.
class KernelHeadersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tcptrace-headers-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = fs::canonical(pattern);
    fs::create_directories(root_ / "lib/modules");
    fs::create_directories(root_ / "usr/src");
    fs::create_directories(root_ / "tmp");
    paths_.modules_dir = (root_ / "lib/modules").string();
    paths_.usr_src = (root_ / "usr/src").string();
    paths_.kheaders_archive = (root_ / "sys/kernel/kheaders.tar.xz").string();
    paths_.running_release = kRunning;

    if (const char* tmp = std::getenv("TMPDIR")) saved_tmpdir_ = tmp;
    setenv("TMPDIR", (root_ / "tmp").c_str(), 1);
  }

  void TearDown() override {
    if (saved_tmpdir_) {
      setenv("TMPDIR", saved_tmpdir_->c_str(), 1);
    } else {
      unsetenv("TMPDIR");
    }
    if (!root_.empty()) {
      std::error_code ec;
      fs::remove_all(root_, ec);
    }
  }

  static void touch(const fs::path& p, const std::string& content = "") {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
  }

  // An objtree: generated headers and .config (Debian's -<flavour> package).
  static void make_build_tree(const fs::path& dir, const std::string& makefile) {
    touch(dir / ".config", "CONFIG_X86_64=y\n");
    touch(dir / "include/generated/autoconf.h", "#define CONFIG_X86_64 1\n");
    touch(dir / "include/config/auto.conf", "CONFIG_X86_64=y\n");
    touch(dir / "arch/x86/include/generated/asm/syscalls_64.h", "/* generated */\n");
    touch(dir / "arch/x86/include/generated/uapi/asm/unistd_64.h", "/* generated uapi */\n");
    touch(dir / "Module.symvers");
    if (!makefile.empty()) touch(dir / "Makefile", makefile);
  }

  // A srctree: headers without generated ones (Debian's -common package).
  static void make_source_tree(const fs::path& dir) {
    touch(dir / "include/linux/kconfig.h", "/* kconfig */\n");
    touch(dir / "include/linux/tcp.h", "/* tcp */\n");
    touch(dir / "arch/x86/include/asm/processor.h", "/* processor */\n");
    touch(dir / "arch/x86/include/uapi/asm/ptrace.h", "/* uapi */\n");
    touch(dir / "Makefile", "# the real kernel Makefile\nVERSION = 6\n");
  }

  // A single merged tree (what kheaders extracts to, or Fedora ships).
  static void make_merged_tree(const fs::path& dir) {
    make_source_tree(dir);
    make_build_tree(dir, "");
  }

  // /usr/src/linux-headers-<version>-cloud-amd64 + -common, as Debian installs them.
  fs::path make_debian_pair(const std::string& version) {
    const fs::path common = root_ / "usr/src" / ("linux-headers-" + version + "-common");
    const fs::path build = root_ / "usr/src" / ("linux-headers-" + version + "-cloud-amd64");
    make_source_tree(common);
    make_build_tree(build, "include " + (common / "Makefile").string() + "\n");
    return build;
  }

  fs::path common_of(const std::string& version) {
    return root_ / "usr/src" / ("linux-headers-" + version + "-common");
  }

  fs::path root_;
  HeaderSearchPaths paths_;
  std::optional<std::string> saved_tmpdir_;
};

// ------------------------------------------------------------- exact

TEST_F(KernelHeadersTest, ExactDebianSplitTree) {
  const fs::path modules = root_ / "lib/modules" / kRunning;
  make_build_tree(modules / "build", "");
  make_source_tree(modules / "source");
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::exact);
  EXPECT_FALSE(choice->tree.has_value());
  EXPECT_TRUE(choice->alternatives.empty());
  EXPECT_EQ(describe_header_choice(*choice, kRunning), "");
}

TEST_F(KernelHeadersTest, ExactThroughSymlinksIntoUsrSrc) {
  // The real Debian layout: build and source are links into /usr/src.
  const fs::path build = make_debian_pair("6.18.44-test");
  (void)build;
  const fs::path modules = root_ / "lib/modules" / kRunning;
  fs::create_directories(modules);
  fs::create_directory_symlink(root_ / "usr/src/linux-headers-6.18.44-test-cloud-amd64", modules / "build");
  fs::create_directory_symlink(common_of("6.18.44-test"), modules / "source");
  // Another kernel's headers are present too; exact still wins.
  make_debian_pair("6.12.38+deb13");
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::exact);
}

TEST_F(KernelHeadersTest, ExactSingleBuildTree) {
  make_merged_tree(root_ / "lib/modules" / kRunning / "build");
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::exact);
}

TEST_F(KernelHeadersTest, ExactBuildTreeNamingItsSourceInMakefile) {
  const fs::path common = common_of("6.18.44-test");
  make_source_tree(common);
  make_build_tree(root_ / "lib/modules" / kRunning / "build", "include " + (common / "Makefile").string() + "\n");
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::exact);
  // BCC itself would look in build/ only, find no include/linux/kconfig.h
  // there and turn to /tmp/kheaders-<release>: the tree is handed over.
  ASSERT_TRUE(choice->tree.has_value());
  EXPECT_EQ(choice->tree->source_dir, common.string());
  EXPECT_EQ(describe_header_choice(*choice, kRunning), "");
}

TEST_F(KernelHeadersTest, ModulesDirWithoutHeadersIsNotExact) {
  // /lib/modules/<running> exists for the modules, but build/ is absent.
  touch(root_ / "lib/modules" / kRunning / "modules.dep");
  touch(paths_.kheaders_archive, "xz");
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::kheaders);
}

TEST_F(KernelHeadersTest, BuildWithoutSourceHalfIsNotExact) {
  make_build_tree(root_ / "lib/modules" / kRunning / "build", "");  // source/ missing
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_FALSE(choice.ok());
  EXPECT_EQ(choice.error().exit_code, ExitCode::runtime);
}

// ---------------------------------------------------------- kheaders

TEST_F(KernelHeadersTest, KheadersArchive) {
  touch(paths_.kheaders_archive, "xz");
  make_debian_pair("6.12.38+deb13");  // installed trees lose to the running kernel's own headers
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::kheaders);
  EXPECT_FALSE(choice->tree.has_value());
  EXPECT_TRUE(Contains(describe_header_choice(*choice, kRunning), "kheaders.tar.xz"));
}

TEST_F(KernelHeadersTest, KheadersFirstForTheTests) {
  make_merged_tree(root_ / "lib/modules" / kRunning / "build");
  touch(paths_.kheaders_archive, "xz");
  paths_.kheaders_first = true;
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::kheaders);
  EXPECT_EQ(choice->kheaders_archive, paths_.kheaders_archive);
  EXPECT_TRUE(Contains(describe_header_choice(*choice, kRunning), paths_.kheaders_archive));
}

TEST_F(KernelHeadersTest, KheadersPathThatIsADirectoryDoesNotCount) {
  fs::create_directories(paths_.kheaders_archive);
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_FALSE(choice.ok());
}

// ---------------------------------------------------------- fallback

TEST_F(KernelHeadersTest, FallbackPicksNewestDebianPair) {
  const fs::path old_build = make_debian_pair("6.1.0-56");
  const fs::path new_build = make_debian_pair("6.12.38+deb13");
  fs::create_directories(root_ / "usr/src/linux-kbuild-6.1");  // not a header tree
  fs::create_directories(root_ / "usr/src/unrelated");

  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::fallback);
  ASSERT_TRUE(choice->tree.has_value());
  EXPECT_EQ(choice->tree->release, "6.12.38+deb13-cloud-amd64");
  EXPECT_EQ(choice->tree->build_dir, new_build.string());
  EXPECT_EQ(choice->tree->source_dir, common_of("6.12.38+deb13").string());
  EXPECT_FALSE(choice->tree->single_tree());

  ASSERT_EQ(choice->alternatives.size(), 1u);
  EXPECT_EQ(choice->alternatives[0].release, "6.1.0-56-cloud-amd64");
  EXPECT_EQ(choice->alternatives[0].build_dir, old_build.string());
  EXPECT_EQ(choice->alternatives[0].source_dir, common_of("6.1.0-56").string());

  const std::string line = describe_header_choice(*choice, kRunning);
  EXPECT_TRUE(Contains(line, "6.12.38+deb13-cloud-amd64"));
  EXPECT_TRUE(Contains(line, "do not match the running kernel 6.18.44-test"));
  EXPECT_TRUE(Contains(line, "linux-headers-6.18.44-test"));
  EXPECT_TRUE(Contains(line, "--kernel-headers"));
}

TEST_F(KernelHeadersTest, CommonTreeIsNeverACandidateOnItsOwn) {
  make_debian_pair("6.1.0-56");
  make_debian_pair("6.12.38+deb13");
  const auto trees = installed_header_trees(paths_);
  ASSERT_EQ(trees.size(), 2u);
  for (const HeaderTree& tree : trees) {
    EXPECT_EQ(tree.release.find("common"), std::string::npos) << tree.release;
    EXPECT_EQ(tree.build_dir.find("common"), std::string::npos) << tree.build_dir;
  }
}

TEST_F(KernelHeadersTest, LoneCommonTreeIsNoHeaders) {
  make_source_tree(common_of("6.1.0-56"));
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_FALSE(choice.ok()) << "chose " << choice->tree->release;
  EXPECT_EQ(choice.error().exit_code, ExitCode::runtime);
}

TEST_F(KernelHeadersTest, FallbackDeduplicatesModulesLinksAndUsrSrc) {
  const fs::path build = make_debian_pair("6.1.0-56");
  const fs::path modules = root_ / "lib/modules/6.1.0-56-cloud-amd64";
  fs::create_directories(modules);
  fs::create_directory_symlink(build, modules / "build");
  fs::create_directory_symlink(common_of("6.1.0-56"), modules / "source");

  const auto trees = installed_header_trees(paths_);
  ASSERT_EQ(trees.size(), 1u);
  EXPECT_EQ(trees[0].release, "6.1.0-56-cloud-amd64");
  EXPECT_EQ(trees[0].build_dir, build.string());
  EXPECT_EQ(trees[0].source_dir, common_of("6.1.0-56").string());
}

TEST_F(KernelHeadersTest, FallbackOrdersByVersionNotByName) {
  make_merged_tree(root_ / "lib/modules/5.10.0-9-amd64/build");
  make_merged_tree(root_ / "lib/modules/6.9.1/build");
  make_merged_tree(root_ / "lib/modules/6.10.0-1/build");
  make_merged_tree(root_ / "lib/modules/6.10.0-12/build");
  const auto trees = installed_header_trees(paths_);
  ASSERT_EQ(trees.size(), 4u);
  EXPECT_EQ(trees[0].release, "6.10.0-12");
  EXPECT_EQ(trees[1].release, "6.10.0-1");
  EXPECT_EQ(trees[2].release, "6.9.1");
  EXPECT_EQ(trees[3].release, "5.10.0-9-amd64");
  for (const HeaderTree& tree : trees) EXPECT_TRUE(tree.single_tree()) << tree.release;
}

TEST_F(KernelHeadersTest, InstalledTreesSkipModulesWithoutHeaders) {
  // Only modules (no headers) for one release, a tree for another.
  touch(root_ / "lib/modules/6.5.0/modules.dep");
  make_merged_tree(root_ / "lib/modules/6.6.0/build");
  const auto trees = installed_header_trees(paths_);
  ASSERT_EQ(trees.size(), 1u);
  EXPECT_EQ(trees[0].release, "6.6.0");
}

TEST_F(KernelHeadersTest, MissingSearchDirectoriesAreNoHeaders) {
  paths_.modules_dir = (root_ / "nope/modules").string();
  paths_.usr_src = (root_ / "nope/src").string();
  EXPECT_TRUE(installed_header_trees(paths_).empty());
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_FALSE(choice.ok());
  EXPECT_EQ(choice.error().exit_code, ExitCode::runtime);
}

// ------------------------------------------------------------ nothing

TEST_F(KernelHeadersTest, NothingInstalledNamesThePackage) {
  auto choice = choose_kernel_headers(paths_, std::nullopt);
  ASSERT_FALSE(choice.ok());
  EXPECT_EQ(choice.error().exit_code, ExitCode::runtime);
  EXPECT_TRUE(Contains(choice.error().message, "linux-headers-6.18.44-test"));
  EXPECT_TRUE(Contains(choice.error().message, "--kernel-headers"));
  EXPECT_EQ(header_package_hint(kRunning), "linux-headers-6.18.44-test");
}

// ---------------------------------------------------- --kernel-headers

TEST_F(KernelHeadersTest, ChosenMergedTree) {
  const fs::path dir = root_ / "headers/linux-6.18";
  make_merged_tree(dir);
  auto choice = choose_kernel_headers(paths_, dir.string());
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::chosen);
  ASSERT_TRUE(choice->tree.has_value());
  EXPECT_TRUE(choice->tree->single_tree());
  EXPECT_EQ(choice->tree->build_dir, dir.string());
  EXPECT_EQ(choice->tree->release, "linux-6.18");
  EXPECT_TRUE(choice->alternatives.empty());
}

TEST_F(KernelHeadersTest, ChosenTrailingSlashIsTheSameTree) {
  // Shell completion adds the slash.
  const fs::path dir = root_ / "headers/linux-6.18";
  make_merged_tree(dir);
  auto tree = header_tree_from_dir(dir.string() + "/");
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  EXPECT_EQ(tree->build_dir, dir.string());
  EXPECT_EQ(tree->source_dir, dir.string());
  EXPECT_EQ(tree->release, "linux-6.18");

  const fs::path modules = root_ / "lib/modules/6.1.0-56-cloud-amd64";
  make_build_tree(modules / "build", "");
  make_source_tree(modules / "source");
  auto from_modules = header_tree_from_dir(modules.string() + "/");
  ASSERT_TRUE(from_modules.ok()) << from_modules.error().message;
  EXPECT_EQ(from_modules->release, "6.1.0-56-cloud-amd64");

  const fs::path build = make_debian_pair("6.1.0-57");
  auto from_build = header_tree_from_dir(build.string() + "/");
  ASSERT_TRUE(from_build.ok()) << from_build.error().message;
  EXPECT_EQ(from_build->release, "6.1.0-57-cloud-amd64");
}

TEST_F(KernelHeadersTest, ChosenRunningKernelsDebianTreeIsNoMismatch) {
  // --kernel-headers /usr/src/linux-headers-$(uname -r) names the running
  // kernel's own headers: no "do not match" warning.
  const fs::path common = common_of("6.18.44");
  make_source_tree(common);
  const fs::path build = root_ / "usr/src" / (std::string("linux-headers-") + kRunning);
  make_build_tree(build, "include " + (common / "Makefile").string() + "\n");
  auto choice = choose_kernel_headers(paths_, build.string());
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->tree->release, kRunning);
  EXPECT_EQ(describe_header_choice(*choice, kRunning),
            "using kernel headers 6.18.44-test (" + build.string() + ")");
}

TEST_F(KernelHeadersTest, ChosenBuildDirOfAModulesDir) {
  // --kernel-headers /lib/modules/<release>/build
  const fs::path modules = root_ / "lib/modules/6.1.0-56-cloud-amd64";
  make_merged_tree(modules / "build");
  auto tree = header_tree_from_dir((modules / "build").string());
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  EXPECT_EQ(tree->release, "6.1.0-56-cloud-amd64");
  EXPECT_TRUE(tree->single_tree());
}

TEST_F(KernelHeadersTest, ChosenRelativeDot) {
  const fs::path dir = root_ / "headers/linux-6.18";
  make_merged_tree(dir);
  const fs::path cwd = fs::current_path();
  fs::current_path(dir);
  auto tree = header_tree_from_dir(".");
  fs::current_path(cwd);
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  EXPECT_EQ(tree->build_dir, dir.string());
  EXPECT_EQ(tree->release, "linux-6.18");
}

TEST_F(KernelHeadersTest, ChosenModulesDir) {
  const fs::path modules = root_ / "lib/modules/6.1.0-56-cloud-amd64";
  make_build_tree(modules / "build", "");
  make_source_tree(modules / "source");
  auto choice = choose_kernel_headers(paths_, modules.string());
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::chosen);
  EXPECT_EQ(choice->tree->release, "6.1.0-56-cloud-amd64");
  EXPECT_EQ(choice->tree->build_dir, (modules / "build").string());
  EXPECT_EQ(choice->tree->source_dir, (modules / "source").string());
  EXPECT_FALSE(choice->tree->single_tree());
}

TEST_F(KernelHeadersTest, ChosenDebianBuildDir) {
  const fs::path build = make_debian_pair("6.1.0-56");
  auto choice = choose_kernel_headers(paths_, build.string());
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::chosen);
  // Named like the installed trees: the release, not the package.
  EXPECT_EQ(choice->tree->release, "6.1.0-56-cloud-amd64");
  EXPECT_EQ(choice->tree->build_dir, build.string());
  EXPECT_EQ(choice->tree->source_dir, common_of("6.1.0-56").string());
}

TEST_F(KernelHeadersTest, ChosenDebianBuildDirWithRelativeInclude) {
  const fs::path common = common_of("6.1.0-56");
  make_source_tree(common);
  const fs::path build = root_ / "usr/src/linux-headers-6.1.0-56-cloud-amd64";
  make_build_tree(build, "# generated\ninclude ../linux-headers-6.1.0-56-common/Makefile\n");
  auto tree = header_tree_from_dir(build.string());
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  EXPECT_EQ(tree->source_dir, common.string());
}

TEST_F(KernelHeadersTest, ChosenDirWinsOverExact) {
  make_merged_tree(root_ / "lib/modules" / kRunning / "build");
  const fs::path dir = root_ / "headers/other";
  make_merged_tree(dir);
  auto choice = choose_kernel_headers(paths_, dir.string());
  ASSERT_TRUE(choice.ok()) << choice.error().message;
  EXPECT_EQ(choice->match, HeaderMatch::chosen);
}

TEST_F(KernelHeadersTest, ChosenNotADirectory) {
  const fs::path file = root_ / "headers.tar";
  touch(file, "not a dir");
  for (const fs::path& p : {file, root_ / "does-not-exist"}) {
    auto choice = choose_kernel_headers(paths_, p.string());
    ASSERT_FALSE(choice.ok()) << p;
    EXPECT_EQ(choice.error().exit_code, ExitCode::runtime);
    EXPECT_TRUE(Contains(choice.error().message, "--kernel-headers"));
    EXPECT_TRUE(Contains(choice.error().message, p.string()));
    EXPECT_TRUE(Contains(choice.error().message, "not a directory"));
  }
}

TEST_F(KernelHeadersTest, ChosenEmptyDirectory) {
  const fs::path dir = root_ / "empty";
  fs::create_directories(dir);
  auto choice = choose_kernel_headers(paths_, dir.string());
  ASSERT_FALSE(choice.ok());
  EXPECT_EQ(choice.error().exit_code, ExitCode::runtime);
  EXPECT_TRUE(Contains(choice.error().message, "--kernel-headers"));
  EXPECT_TRUE(Contains(choice.error().message, dir.string()));
  EXPECT_TRUE(Contains(choice.error().message, "not a kernel header tree"));
}

TEST_F(KernelHeadersTest, ChosenBuildTreeWhoseSourceIsGone) {
  make_build_tree(root_ / "orphan", "include /nonexistent/linux-headers-common/Makefile\n");
  auto tree = header_tree_from_dir((root_ / "orphan").string());
  ASSERT_FALSE(tree.ok());
  EXPECT_EQ(tree.error().exit_code, ExitCode::runtime);
}

// ------------------------------------------------------- describing

TEST_F(KernelHeadersTest, DescribeChosen) {
  HeaderChoice choice;
  choice.match = HeaderMatch::chosen;
  choice.tree = HeaderTree{"6.1.0-56-cloud-amd64", "/b", "/s"};
  const std::string mismatch = describe_header_choice(choice, kRunning);
  EXPECT_TRUE(Contains(mismatch, "using kernel headers 6.1.0-56-cloud-amd64 (/b)"));
  EXPECT_TRUE(Contains(mismatch, "do not match the running kernel 6.18.44-test"));
  EXPECT_EQ(mismatch.find("install"), std::string::npos) << "the user chose; no advice";

  choice.tree->release = kRunning;
  EXPECT_EQ(describe_header_choice(choice, kRunning), "using kernel headers 6.18.44-test (/b)");
}

TEST_F(KernelHeadersTest, DescribeExactIsSilent) {
  HeaderChoice choice;
  choice.match = HeaderMatch::exact;
  EXPECT_EQ(describe_header_choice(choice, kRunning), "");
}

TEST_F(KernelHeadersTest, DescribeFallback) {
  HeaderChoice choice;
  choice.match = HeaderMatch::fallback;
  choice.tree = HeaderTree{"6.1.0-56-cloud-amd64", "/b", "/s"};
  const std::string line = describe_header_choice(choice, kRunning);
  EXPECT_TRUE(Contains(line, "do not match the running kernel 6.18.44-test"));
  EXPECT_TRUE(Contains(line, "install linux-headers-6.18.44-test"));
}

// ------------------------------------------------------- merged tree

TEST_F(KernelHeadersTest, MergedTreeOfASplitTree) {
  const fs::path build = make_debian_pair("6.1.0-56");
  auto tree = header_tree_from_dir(build.string());
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  ASSERT_FALSE(tree->single_tree());

  std::string merged_path;
  {
    auto merged = MergedHeaderTree::create(*tree, PrivateHeaderSpace::Kind::directory);
    ASSERT_TRUE(merged.ok()) << merged.error().message;
    merged_path = merged->path();
    const fs::path m(merged_path);
    EXPECT_EQ(m.parent_path(), root_ / "tmp") << "honours TMPDIR";
    EXPECT_EQ(m.filename().string().rfind("tcptrace-bcc-headers-", 0), 0u) << merged_path;
    EXPECT_EQ(fs::status(m).permissions() & fs::perms::all, fs::perms::owner_all);
    EXPECT_NE(merged_path, tree->build_dir);

    // Both halves resolve through the one directory.
    EXPECT_EQ(read_text(m / "include/linux/kconfig.h"), "/* kconfig */\n");
    EXPECT_EQ(read_text(m / "include/linux/tcp.h"), "/* tcp */\n");
    EXPECT_EQ(read_text(m / "include/generated/autoconf.h"), "#define CONFIG_X86_64 1\n");
    EXPECT_TRUE(fs::is_regular_file(m / "include/config/auto.conf"));
    EXPECT_EQ(read_text(m / "arch/x86/include/generated/asm/syscalls_64.h"), "/* generated */\n");
    EXPECT_TRUE(fs::is_regular_file(m / "arch/x86/include/generated/uapi/asm/unistd_64.h"));
    EXPECT_EQ(read_text(m / "arch/x86/include/asm/processor.h"), "/* processor */\n");
    EXPECT_TRUE(fs::is_regular_file(m / "arch/x86/include/uapi/asm/ptrace.h"));
    EXPECT_EQ(read_text(m / ".config"), "CONFIG_X86_64=y\n");
    // Where both halves hold a file, the build tree's wins.
    EXPECT_TRUE(Contains(read_text(m / "Makefile"), "include "));
    // BCC's own test: the merged tree is a tree.
    auto again = header_tree_from_dir(merged_path);
    ASSERT_TRUE(again.ok()) << again.error().message;
  }
  EXPECT_FALSE(fs::exists(merged_path)) << "removed with the object";
  // Removing the links left both halves alone.
  EXPECT_TRUE(fs::is_regular_file(common_of("6.1.0-56") / "include/linux/kconfig.h"));
  EXPECT_TRUE(fs::is_regular_file(build / "include/generated/autoconf.h"));
  EXPECT_TRUE(fs::is_regular_file(build / "arch/x86/include/generated/asm/syscalls_64.h"));
  EXPECT_TRUE(fs::is_regular_file(common_of("6.1.0-56") / "arch/x86/include/asm/processor.h"));
}

TEST_F(KernelHeadersTest, MergedTreeOfASingleTreeIsTheTree) {
  const fs::path dir = root_ / "headers/linux-6.18";
  make_merged_tree(dir);
  auto tree = header_tree_from_dir(dir.string());
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  ASSERT_TRUE(tree->single_tree());
  {
    auto merged = MergedHeaderTree::create(*tree);
    ASSERT_TRUE(merged.ok()) << merged.error().message;
    EXPECT_EQ(merged->path(), tree->build_dir);
  }
  EXPECT_TRUE(fs::is_regular_file(dir / "include/linux/kconfig.h")) << "nothing removed";
  EXPECT_TRUE(fs::is_empty(root_ / "tmp")) << "nothing created";
}

TEST_F(KernelHeadersTest, MergedTreeMovesOwnership) {
  make_debian_pair("6.1.0-56");
  auto tree = header_tree_from_dir((root_ / "usr/src/linux-headers-6.1.0-56-cloud-amd64").string());
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  auto first = MergedHeaderTree::create(*tree, PrivateHeaderSpace::Kind::directory);
  auto second = MergedHeaderTree::create(*tree, PrivateHeaderSpace::Kind::directory);
  ASSERT_TRUE(first.ok() && second.ok());
  const std::string first_path = first->path();
  const std::string second_path = second->path();
  ASSERT_NE(first_path, second_path);
  {
    std::optional<MergedHeaderTree> moved(std::move(first).value());
    {
      MergedHeaderTree target(std::move(*moved));
      // `moved` no longer owns the directory; destroying it must not remove it.
      moved.reset();
      EXPECT_TRUE(fs::exists(first_path));
      // Assigning over an owned tree removes the one it held.
      target = std::move(second).value();
      EXPECT_FALSE(fs::exists(first_path));
      EXPECT_TRUE(fs::exists(second_path));
      EXPECT_EQ(target.path(), second_path);
    }
    EXPECT_FALSE(fs::exists(second_path));
  }
}

TEST_F(KernelHeadersTest, MergedTreeUnwritableTmpdir) {
  setenv("TMPDIR", (root_ / "no/such/dir").c_str(), 1);
  make_debian_pair("6.1.0-56");
  auto tree = header_tree_from_dir((root_ / "usr/src/linux-headers-6.1.0-56-cloud-amd64").string());
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  auto merged = MergedHeaderTree::create(*tree, PrivateHeaderSpace::Kind::directory);
  ASSERT_FALSE(merged.ok());
  EXPECT_EQ(merged.error().exit_code, ExitCode::runtime);
  EXPECT_TRUE(Contains(merged.error().message, (root_ / "no/such/dir").string()));
}

TEST_F(KernelHeadersTest, MergedTreeInADetachedTmpfs) {
  if (!PrivateHeaderSpace::create(PrivateHeaderSpace::Kind::detached).ok()) {
    GTEST_SKIP() << "this process cannot make a detached tmpfs (CAP_SYS_ADMIN, Linux 5.2)";
  }
  const fs::path build = make_debian_pair("6.1.0-56");
  auto tree = header_tree_from_dir(build.string());
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  std::string merged_path;
  {
    auto merged = MergedHeaderTree::create(*tree, PrivateHeaderSpace::Kind::detached);
    ASSERT_TRUE(merged.ok()) << merged.error().message;
    merged_path = merged->path();
    // Named by no path on the machine: only through this process's fd.
    EXPECT_EQ(merged_path.rfind("/proc/self/fd/", 0), 0u) << merged_path;
    EXPECT_EQ(read_text(fs::path(merged_path) / "include/linux/kconfig.h"), "/* kconfig */\n");
    EXPECT_EQ(read_text(fs::path(merged_path) / "include/generated/autoconf.h"), "#define CONFIG_X86_64 1\n");
    auto again = header_tree_from_dir(merged_path);
    ASSERT_TRUE(again.ok()) << again.error().message;
  }
  EXPECT_FALSE(fs::exists(fs::path(merged_path) / "include")) << "gone with the object";
  EXPECT_TRUE(fs::is_empty(root_ / "tmp")) << "nothing in TMPDIR";
  EXPECT_TRUE(fs::is_regular_file(common_of("6.1.0-56") / "include/linux/kconfig.h"));
}

}  // namespace
}  // namespace tcptrace
