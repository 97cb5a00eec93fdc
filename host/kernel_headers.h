// Finding the kernel headers BCC compiles against.
//
// BCC looks for /lib/modules/$(uname -r)/build (plus .../source on distros
// that split the tree, as Debian does), then /sys/kernel/kheaders.tar.xz
// (CONFIG_IKHEADERS), or takes one merged tree from BCC_KERNEL_SOURCE.
// Exact headers for the running kernel always win. Without them the host
// picks the newest installed tree, says on stderr that it does not match, and
// hands it to BCC through BCC_KERNEL_SOURCE, merging Debian's split
// build/common trees into a private symlink tree first (nothing is written
// under /lib/modules). Programs that read only tracepoint records, like
// `states`, are immune to a mismatch; see README "Kernel headers".
#pragma once

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
  kheaders,     // /sys/kernel/kheaders.tar.xz: BCC extracts it itself
  chosen,       // --kernel-headers DIR
  fallback,     // another installed kernel's headers
};

struct HeaderChoice {
  HeaderMatch match = HeaderMatch::exact;
  std::optional<HeaderTree> tree;          // the tree to hand to BCC, if BCC would not find it
  std::vector<HeaderTree> alternatives;    // further fallbacks, best first
};

struct HeaderSearchPaths {
  std::string modules_dir = "/lib/modules";
  std::string usr_src = "/usr/src";
  std::string kheaders_archive = "/sys/kernel/kheaders.tar.xz";
  std::string running_release;  // uname -r
};

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

// A merged view of a split tree (symlinks into both halves) in a private
// temporary directory, removed when this object is destroyed. BCC's
// BCC_KERNEL_SOURCE takes one directory holding both halves.
class MergedHeaderTree {
 public:
  static Result<MergedHeaderTree> create(const HeaderTree& tree);
  MergedHeaderTree(MergedHeaderTree&& other) noexcept;
  MergedHeaderTree& operator=(MergedHeaderTree&& other) noexcept;
  MergedHeaderTree(const MergedHeaderTree&) = delete;
  MergedHeaderTree& operator=(const MergedHeaderTree&) = delete;
  ~MergedHeaderTree();

  // The directory to hand to BCC (the tree itself when it is not split).
  const std::string& path() const { return path_; }

 private:
  MergedHeaderTree(std::string path, bool owned) : path_(std::move(path)), owned_(owned) {}
  std::string path_;
  bool owned_ = false;
};

}  // namespace tcptrace
