// Unpacking /sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS) ourselves.
//
// BCC 0.26 unpacks that archive to /tmp/kheaders-<release> and, when that
// directory already exists, uses it as it finds it, whoever made it
// (kbuild_helper.cc get_proc_kheaders; CVE-2024-2314, fixed after 0.26). A
// local user who creates it first gets their text compiled into a program
// root loads. The host therefore unpacks the archive into a directory of
// its own (kernel_headers.h, PrivateHeaderSpace) and hands BCC that tree
// through BCC_KERNEL_SOURCE; BCC looks for kheaders only when the tree it is
// given lacks include/linux/kconfig.h (loader.cc), which an unpacked kheaders
// tree has.
//
// The unpacker reads the xz stream with liblzma and the tar stream itself.
// It creates only directories and regular files, each relative to the
// target directory's fd with O_NOFOLLOW, so no entry can reach outside it:
// names that are absolute or contain ".." are refused, and symbolic links,
// hard links and device nodes (the kernel's archive has none) are skipped.
#pragma once

#include <cstddef>
#include <string>

#include "result.h"

namespace tcptrace {

struct UnpackedArchive {
  size_t files = 0;
  size_t directories = 0;
  size_t skipped = 0;  // links, devices, fifos: not unpacked
};

// Unpacks the xz-compressed tar file `archive` into the directory open as
// `dir_fd`, which should be empty. Fails on a damaged archive, a refused
// name, or a file that cannot be written.
Result<UnpackedArchive> unpack_kheaders_archive(const std::string& archive, int dir_fd);

}  // namespace tcptrace
