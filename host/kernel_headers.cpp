#include "kernel_headers.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <system_error>

#include "kheaders_archive.h"

namespace tcptrace {
namespace fs = std::filesystem;

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// BCC checks exactly this file before using a tree (loader.cc).
bool has_kconfig(const fs::path& dir) { return is_file(dir / "include/linux/kconfig.h"); }

// An objtree carries the generated headers and the kernel configuration.
bool is_build_tree(const fs::path& dir) {
  return is_dir(dir / "include/generated") || is_file(dir / ".config");
}

// Debian's build trees have a one-line Makefile:
//   include /usr/src/linux-headers-6.1.0-56-common/Makefile
std::optional<fs::path> source_from_makefile(const fs::path& build) {
  std::ifstream makefile(build / "Makefile");
  std::string line;
  while (std::getline(makefile, line)) {
    const std::string prefix = "include ";
    if (line.rfind(prefix, 0) != 0) continue;
    fs::path included = line.substr(prefix.size());
    if (!included.is_absolute()) included = build / included;
    const fs::path source = included.parent_path();
    if (has_kconfig(source)) return source;
  }
  return std::nullopt;
}

std::string canonical_text(const fs::path& p) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(fs::absolute(p), ec);
  return (ec ? p : canonical).string();
}

std::optional<HeaderTree> tree_from_build(const fs::path& build, std::string release) {
  // A source half alone (Debian's -common) lacks the generated headers.
  if (has_kconfig(build) && is_build_tree(build)) return HeaderTree{std::move(release), canonical_text(build), canonical_text(build)};
  if (!is_build_tree(build)) return std::nullopt;
  if (auto source = source_from_makefile(build)) {
    return HeaderTree{std::move(release), canonical_text(build), canonical_text(*source)};
  }
  return std::nullopt;
}

std::optional<HeaderTree> tree_from_modules_dir(const fs::path& dir, const std::string& release) {
  const fs::path build = dir / "build";
  const fs::path source = dir / "source";
  if (is_dir(build) && is_dir(source) && has_kconfig(source)) {
    return HeaderTree{release, canonical_text(build), canonical_text(source)};
  }
  if (is_dir(build)) return tree_from_build(build, release);
  return std::nullopt;
}

// "6.1.0-56-cloud-amd64" -> {6, 1, 0, 56}: orders releases by version.
std::vector<long> version_key(const std::string& release) {
  std::vector<long> key;
  size_t i = 0;
  while (i < release.size()) {
    if (release[i] >= '0' && release[i] <= '9') {
      long n = 0;
      while (i < release.size() && release[i] >= '0' && release[i] <= '9') {
        n = n * 10 + (release[i] - '0');
        ++i;
      }
      key.push_back(n);
    } else if (release[i] == '.' || release[i] == '-') {
      ++i;
    } else {
      break;  // flavour suffix ("cloud-amd64") does not order releases
    }
  }
  return key;
}

}  // namespace

HeaderSearchPaths default_header_search_paths() {
  HeaderSearchPaths paths;
  utsname un{};
  uname(&un);
  paths.running_release = un.release;
  if (const char* archive = std::getenv("TCPTRACE_TEST_KHEADERS_ARCHIVE"); archive && *archive) {
    paths.kheaders_archive = archive;
    paths.kheaders_first = true;
  }
  return paths;
}

namespace {

// The release a --kernel-headers DIR is named after, spelled as for installed
// trees so describe_header_choice compares it with uname -r:
// /usr/src/linux-headers-<release>, /lib/modules/<release> and
// /lib/modules/<release>/build all give <release>. "DIR/" and "." name the
// directory itself, not "" or ".".
std::string release_of_dir(const fs::path& dir) {
  std::error_code ec;
  fs::path path = fs::absolute(dir, ec);
  if (ec) path = dir;
  path = path.lexically_normal();
  if (path.filename().empty()) path = path.parent_path();
  std::string name = path.filename().string();
  if ((name == "build" || name == "source") && !path.parent_path().filename().empty()) {
    name = path.parent_path().filename().string();
  }
  const std::string prefix = "linux-headers-";
  if (name.size() > prefix.size() && name.rfind(prefix, 0) == 0) name.erase(0, prefix.size());
  return name;
}

}  // namespace

Result<HeaderTree> header_tree_from_dir(const std::string& dir) {
  const fs::path path(dir);
  if (!is_dir(path)) return runtime_error("--kernel-headers: '" + dir + "' is not a directory");
  const std::string release = release_of_dir(path);
  if (auto tree = tree_from_modules_dir(path, release)) return *tree;
  if (auto tree = tree_from_build(path, release)) return *tree;
  return runtime_error("--kernel-headers: '" + dir +
                       "' is not a kernel header tree (no include/linux/kconfig.h, no build/ "
                       "and source/, no Makefile naming the source tree)");
}

std::vector<HeaderTree> installed_header_trees(const HeaderSearchPaths& paths) {
  std::vector<HeaderTree> trees;
  std::set<std::string> seen;
  auto add = [&](std::optional<HeaderTree> tree) {
    if (!tree || tree->release == paths.running_release) return;
    if (!seen.insert(tree->build_dir).second) return;
    trees.push_back(std::move(*tree));
  };
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(paths.modules_dir, ec)) {
    add(tree_from_modules_dir(entry.path(), entry.path().filename().string()));
  }
  for (const auto& entry : fs::directory_iterator(paths.usr_src, ec)) {
    const std::string name = entry.path().filename().string();
    const std::string prefix = "linux-headers-";
    if (name.rfind(prefix, 0) != 0) continue;
    add(tree_from_build(entry.path(), name.substr(prefix.size())));
  }
  std::stable_sort(trees.begin(), trees.end(), [](const HeaderTree& a, const HeaderTree& b) {
    return version_key(a.release) > version_key(b.release);
  });
  return trees;
}

std::string header_package_hint(const std::string& release) {
  return "linux-headers-" + release;
}

Result<HeaderChoice> choose_kernel_headers(const HeaderSearchPaths& paths,
                                           const std::optional<std::string>& chosen_dir) {
  HeaderChoice choice;
  if (chosen_dir) {
    auto tree = header_tree_from_dir(*chosen_dir);
    if (!tree) return std::move(tree).take_error();
    choice.match = HeaderMatch::chosen;
    choice.tree = std::move(tree).value();
    return choice;
  }
  if (paths.kheaders_first && is_file(paths.kheaders_archive)) {
    choice.match = HeaderMatch::kheaders;
    choice.kheaders_archive = paths.kheaders_archive;
    return choice;
  }
  const fs::path running = fs::path(paths.modules_dir) / paths.running_release;
  if (auto tree = tree_from_modules_dir(running, paths.running_release)) {
    choice.match = HeaderMatch::exact;
    // BCC finds this tree itself only where its own lookup looks (loader.cc:
    // DIR/source when DIR/build and DIR/source are both directories, else
    // DIR/build, or DIR/$BCC_KERNEL_MODULES_SUFFIX); where that has no
    // include/linux/kconfig.h it turns to /tmp/kheaders-<release> instead,
    // so the tree is handed over.
    const bool split = is_dir(running / "build") && is_dir(running / "source");
    const char* suffix = std::getenv("BCC_KERNEL_MODULES_SUFFIX");
    const fs::path bcc_looks_at = split ? running / "source" : running / (suffix ? suffix : "build");
    if (!has_kconfig(bcc_looks_at)) choice.tree = std::move(*tree);
    return choice;
  }
  // The running kernel's own tree under /usr/src without its /lib/modules
  // link (a container that mounts only /usr/src): exact, handed over.
  const fs::path own_src = fs::path(paths.usr_src) / ("linux-headers-" + paths.running_release);
  if (auto tree = tree_from_build(own_src, paths.running_release)) {
    choice.match = HeaderMatch::exact;
    choice.tree = std::move(*tree);
    return choice;
  }
  if (is_file(paths.kheaders_archive)) {
    choice.match = HeaderMatch::kheaders;
    choice.kheaders_archive = paths.kheaders_archive;
    return choice;
  }
  std::vector<HeaderTree> installed = installed_header_trees(paths);
  if (installed.empty()) {
    return runtime_error("no kernel headers found for the running kernel " + paths.running_release +
                         " nor any other: install " + header_package_hint(paths.running_release) +
                         " (Debian/Ubuntu; or linux-headers-amd64 when that does not exist), or "
                         "pass --kernel-headers DIR");
  }
  choice.match = HeaderMatch::fallback;
  choice.tree = installed.front();
  choice.alternatives.assign(installed.begin() + 1, installed.end());
  return choice;
}

std::string describe_header_choice(const HeaderChoice& choice, const std::string& running_release) {
  switch (choice.match) {
    case HeaderMatch::exact:
      return "";
    case HeaderMatch::kheaders:
      return "using the running kernel's built-in headers (" +
             (choice.kheaders_archive.empty() ? std::string("/sys/kernel/kheaders.tar.xz") : choice.kheaders_archive) +
             ")";
    case HeaderMatch::chosen:
    case HeaderMatch::fallback: {
      const HeaderTree& tree = *choice.tree;
      std::string line = "using kernel headers " + tree.release + " (" + tree.build_dir + ")";
      if (tree.release != running_release) {
        line += ", which do not match the running kernel " + running_release;
        if (choice.match == HeaderMatch::fallback) {
          line += "; install " + header_package_hint(running_release) +
                  " or choose a tree with --kernel-headers DIR";
        }
      }
      return line;
    }
  }
  return "";
}

namespace {

// Links every entry of `dirs` (earlier wins on a clash of files) into `dest`,
// descending into names that are directories in more than one of them.
std::error_code merge_into(const fs::path& dest, const std::vector<fs::path>& dirs) {
  std::error_code ec;
  std::set<std::string> names;
  for (const auto& dir : dirs) {
    for (const auto& entry : fs::directory_iterator(dir, ec)) names.insert(entry.path().filename().string());
    if (ec) return ec;
  }
  for (const auto& name : names) {
    std::vector<fs::path> holders;
    for (const auto& dir : dirs) {
      if (fs::exists(dir / name, ec)) holders.push_back(dir / name);
    }
    size_t dir_holders = 0;
    for (const auto& h : holders) dir_holders += is_dir(h) ? 1 : 0;
    if (dir_holders > 1) {
      std::vector<fs::path> subdirs;
      for (const auto& h : holders) {
        if (is_dir(h)) subdirs.push_back(h);
      }
      fs::create_directory(dest / name, ec);
      if (ec) return ec;
      if (auto err = merge_into(dest / name, subdirs)) return err;
    } else if (!holders.empty()) {
      fs::create_symlink(fs::absolute(holders.front()), dest / name, ec);
      if (ec) return ec;
    }
  }
  return {};
}

// Where a PrivateHeaderSpace directory goes: $TMPDIR when set; else
// /dev/shm when it is a tmpfs, else /tmp. A merged tree's ~120 links and
// directories are made and removed on every run; on this project's CI
// machine (/tmp on ext4) that cost ~60 ms of the start-up, on tmpfs well
// under one.
std::string private_directory_parent() {
  if (const char* tmp = std::getenv("TMPDIR"); tmp && *tmp) return tmp;
  struct statfs fs_info {};
  if (::statfs("/dev/shm", &fs_info) == 0 && fs_info.f_type == TMPFS_MAGIC && ::access("/dev/shm", W_OK) == 0) {
    return "/dev/shm";
  }
  return "/tmp";
}

// A tmpfs attached to no mount point, as an fd; -1 when the kernel refuses
// (no CAP_SYS_ADMIN in the mount namespace's user namespace, or a kernel
// older than 5.2). mode=0700 keeps even other processes of root's that find
// /proc/<pid>/fd/N out of nothing they could not read anyway.
int detached_tmpfs() {
  const int context = ::fsopen("tmpfs", FSOPEN_CLOEXEC);
  if (context < 0) return -1;
  int mount_fd = -1;
  if (::fsconfig(context, FSCONFIG_SET_STRING, "mode", "0700", 0) == 0 &&
      ::fsconfig(context, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) == 0) {
    mount_fd = ::fsmount(context, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
  }
  ::close(context);
  return mount_fd;
}

}  // namespace

Result<std::unique_ptr<PrivateHeaderSpace>> PrivateHeaderSpace::create(Kind kind) {
  if (kind != Kind::directory) {
    if (const int fd = detached_tmpfs(); fd >= 0) {
      return std::unique_ptr<PrivateHeaderSpace>(
          new PrivateHeaderSpace("/proc/self/fd/" + std::to_string(fd), fd, true));
    }
    if (kind == Kind::detached) {
      return runtime_error(std::string("cannot make a private tmpfs for kernel headers: ") + std::strerror(errno));
    }
  }
  std::string pattern = private_directory_parent() + "/tcptrace-bcc-headers-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    return runtime_error("cannot create a private directory for kernel headers in " +
                         fs::path(pattern).parent_path().string() + ": " + std::strerror(errno));
  }
  const int fd = ::open(pattern.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    ::rmdir(pattern.c_str());
    return runtime_error("cannot open " + pattern + ": " + std::strerror(err));
  }
  return std::unique_ptr<PrivateHeaderSpace>(new PrivateHeaderSpace(pattern, fd, false));
}

PrivateHeaderSpace::~PrivateHeaderSpace() {
  if (!detached_) {
    std::error_code ec;
    fs::remove_all(path_, ec);  // removes links, never their targets
  }
  // The detached tmpfs goes with its last reference: this fd (BCC's working
  // directory during a compile is only on the compiling thread).
  ::close(fd_);
}

Result<HeaderChoice> unpack_kheaders(HeaderChoice choice, PrivateHeaderSpace::Kind kind) {
  if (choice.match != HeaderMatch::kheaders || choice.unpacked) return choice;
  auto space = PrivateHeaderSpace::create(kind);
  if (!space) return std::move(space).take_error();
  auto unpacked = unpack_kheaders_archive(choice.kheaders_archive, (*space)->fd());
  if (!unpacked) return std::move(unpacked).take_error();
  const std::string root = (*space)->path();
  // BCC compiles against any tree it is handed, and reaches for
  // /tmp/kheaders-<release> when that tree lacks include/linux/kconfig.h.
  if (!has_kconfig(root)) {
    return runtime_error(choice.kheaders_archive + " holds no include/linux/kconfig.h: not a kernel header archive");
  }
  utsname un{};
  uname(&un);
  choice.tree = HeaderTree{un.release, root, root};
  choice.unpacked = std::shared_ptr<const PrivateHeaderSpace>(std::move(space).value());
  return choice;
}

Result<MergedHeaderTree> MergedHeaderTree::create(const HeaderTree& tree, PrivateHeaderSpace::Kind kind) {
  if (tree.single_tree()) return MergedHeaderTree(tree.build_dir, nullptr);
  auto space = PrivateHeaderSpace::create(kind);
  if (!space) return std::move(space).take_error();
  const std::string root = (*space)->path();
  // The build tree (generated headers, .config) comes first: where both halves
  // hold the same file, the objtree's generated one is the right one.
  if (auto ec = merge_into(root, {tree.build_dir, tree.source_dir})) {
    return runtime_error("cannot merge kernel headers " + tree.build_dir + " and " + tree.source_dir +
                         " into " + root + ": " + ec.message());
  }
  return MergedHeaderTree(root, std::move(space).value());
}

MergedHeaderTree::MergedHeaderTree(MergedHeaderTree&& other) noexcept = default;
MergedHeaderTree& MergedHeaderTree::operator=(MergedHeaderTree&& other) noexcept = default;
MergedHeaderTree::~MergedHeaderTree() = default;

}  // namespace tcptrace
