// Finding the kernel headers BCC compiles against.
//
// BCC looks for /lib/modules/$(uname -r)/build (plus .../source on distros
// that split the tree, as Debian does), then /sys/kernel/kheaders.tar.xz
// (CONFIG_IKHEADERS), or takes one merged tree from BCC_KERNEL_SOURCE.
// Exact headers for the running kernel always win. Without them the host
// picks the newest installed tree, says on stderr that it does not match, and
// hands it to BCC through BCC_KERNEL_SOURCE, merging Debian's split
// build/common trees into a private symlink tree first (nothing is written
// under /lib/modules). A kheaders archive is unpacked by the host, never by
// BCC (kheaders_archive.h). Programs that read only tracepoint records, like
// `states`, are immune to a mismatch; see README "Kernel headers".
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "result.h"

namespace tcptrace {

struct HeaderTree {
  std::string release;     // e.g. "6.1.0-56-cloud-amd64"
  std::string build_dir;   // objtree: generated headers, .config
  std::string source_dir;  // srctree; equal to build_dir for a single tree
  bool single_tree() const { return build_dir == source_dir; }
};

enum class HeaderMatch {
  exact,        // the running kernel's headers: /lib/modules/<running>/build
                // (BCC finds it; `tree` empty) or /usr/src/linux-headers-<running>
  kheaders,     // /sys/kernel/kheaders.tar.xz, unpacked by the host (unpack_kheaders)
  chosen,       // --kernel-headers DIR
  fallback,     // another installed kernel's headers
};

class PrivateHeaderSpace;

struct HeaderChoice {
  HeaderMatch match = HeaderMatch::exact;
  std::optional<HeaderTree> tree;          // the tree to hand to BCC, if BCC would not find it
  std::vector<HeaderTree> alternatives;    // further fallbacks, best first
  std::string kheaders_archive;            // kheaders: the archive to unpack (unpack_kheaders)
  // kheaders, once unpacked: where `tree` lives, kept for as long as a
  // choice refers to it.
  std::shared_ptr<const PrivateHeaderSpace> unpacked;
};

struct HeaderSearchPaths {
  std::string modules_dir = "/lib/modules";
  std::string usr_src = "/usr/src";
  std::string kheaders_archive = "/sys/kernel/kheaders.tar.xz";
  std::string running_release;  // uname -r
  // Use kheaders_archive even when header trees are installed (the
  // integration tests' fake archive: TCPTRACE_TEST_KHEADERS_ARCHIVE).
  bool kheaders_first = false;
};

// The real paths and uname -r. TCPTRACE_TEST_KHEADERS_ARCHIVE=FILE, for the
// tests only, stands in for /sys/kernel/kheaders.tar.xz and is used before
// any installed tree.
HeaderSearchPaths default_header_search_paths();

// Decides which headers to use. Fails (runtime error) when there are none,
// naming the package to install, or when --kernel-headers DIR is not a
// kernel header tree.
Result<HeaderChoice> choose_kernel_headers(const HeaderSearchPaths& paths,
                                           const std::optional<std::string>& chosen_dir);

// Interprets DIR as a header tree: a merged tree (include/linux/kconfig.h),
// a /lib/modules/<release> directory (build/ and source/), or a Debian build
// tree whose Makefile includes its -common source tree.
Result<HeaderTree> header_tree_from_dir(const std::string& dir);

// Installed trees other than the running kernel's, newest version first.
std::vector<HeaderTree> installed_header_trees(const HeaderSearchPaths& paths);

// The package that would hold headers for `release` (for messages).
std::string header_package_hint(const std::string& release);

// One stderr line describing the choice ("" for exact headers).
std::string describe_header_choice(const HeaderChoice& choice, const std::string& running_release);

// A directory for the trees the host makes for BCC (merged halves, an
// unpacked kheaders archive) that no other user can create first, name, or
// write into.
//
// Preferably (`detached`, needs CAP_SYS_ADMIN and Linux 5.2's mount API) a
// tmpfs that is mounted nowhere: fsopen()/fsmount() give it as a file
// descriptor only, and BCC reaches it at /proc/self/fd/N. No path on the
// machine names it, and the kernel frees it with the process's last
// reference to it, so even SIGKILL leaves nothing behind. Otherwise
// (`directory`, or when the mount is refused) a mkdtemp() directory (mode
// 0700, a fresh name that mkdir(2) refuses to reuse) in $TMPDIR, /dev/shm or
// /tmp, removed by the destructor.
class PrivateHeaderSpace {
 public:
  enum class Kind { automatic, detached, directory };
  static Result<std::unique_ptr<PrivateHeaderSpace>> create(Kind kind = Kind::automatic);
  ~PrivateHeaderSpace();
  PrivateHeaderSpace(const PrivateHeaderSpace&) = delete;
  PrivateHeaderSpace& operator=(const PrivateHeaderSpace&) = delete;

  // Its root, as a path BCC can use.
  const std::string& path() const { return path_; }
  // Its root, open.
  int fd() const { return fd_; }
  bool detached() const { return detached_; }

 private:
  PrivateHeaderSpace(std::string path, int fd, bool detached) : path_(std::move(path)), fd_(fd), detached_(detached) {}
  std::string path_;
  int fd_ = -1;
  bool detached_ = false;
};

// For HeaderMatch::kheaders: unpacks the archive into a PrivateHeaderSpace
// (kheaders_archive.h) and makes the choice hand that tree to BCC, so BCC
// never uses /tmp/kheaders-<release>. Other choices are returned unchanged.
Result<HeaderChoice> unpack_kheaders(HeaderChoice choice,
                                     PrivateHeaderSpace::Kind kind = PrivateHeaderSpace::Kind::automatic);

// A merged view of a split tree (symlinks into both halves) in a
// PrivateHeaderSpace of its own, gone when this object is destroyed. BCC's
// BCC_KERNEL_SOURCE takes one directory holding both halves.
class MergedHeaderTree {
 public:
  static Result<MergedHeaderTree> create(const HeaderTree& tree,
                                         PrivateHeaderSpace::Kind kind = PrivateHeaderSpace::Kind::automatic);
  MergedHeaderTree(MergedHeaderTree&& other) noexcept;
  MergedHeaderTree& operator=(MergedHeaderTree&& other) noexcept;
  MergedHeaderTree(const MergedHeaderTree&) = delete;
  MergedHeaderTree& operator=(const MergedHeaderTree&) = delete;
  ~MergedHeaderTree();

  // The directory to hand to BCC (the tree itself when it is not split).
  const std::string& path() const { return path_; }

 private:
  MergedHeaderTree(std::string path, std::unique_ptr<PrivateHeaderSpace> space)
      : path_(std::move(path)), space_(std::move(space)) {}
  std::string path_;
  std::unique_ptr<PrivateHeaderSpace> space_;  // null for a tree used as it is
};

}  // namespace tcptrace
