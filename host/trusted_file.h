// Files the tool reads and writes as root: the BPF programs it compiles into
// the kernel, the BPF-side headers they include, and --record-raw.
//
// A program file decides what code root loads into the kernel, so it is
// read as sshd's StrictModes reads authorized_keys: when the process runs as
// root, a file, or a directory above it, that another user could write is
// refused. Trusted owners are root and the user who asked for the run: the
// real uid, or the user sudo ran the tool for (SUDO_UID). Group- or
// other-writable files and directories are refused, except a sticky
// directory (/tmp), where only an entry's owner may replace it.
//
// Files are opened without following a final symbolic link and without
// blocking (a FIFO would hang the open or the read), must be regular files
// and are read up to a size cap (/dev/zero would never end).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "result.h"
#include "unique_fd.h"

namespace tcptrace {

struct FileTrust {
  bool check_owners = false;        // running as root: owners and modes are checked
  std::vector<uid_t> trusted_owners;  // root, the real uid, SUDO_UID
};

// The rule for this process: checked when the effective uid is 0.
FileTrust file_trust_for_this_process();

// Largest program file read, in bytes.
inline constexpr size_t kMaxProgramFileBytes = 1 << 20;

// Why `st`, the status of `path`, may not be trusted; "" when it may.
std::string untrusted_reason(const std::string& path, const struct stat& st, const FileTrust& trust);

// Checks `dir` and every directory above it (symbolic links resolved).
// Errors are runtime errors starting "<what>: ".
Status check_trusted_directory(const std::string& what, const std::string& dir, const FileTrust& trust);

// Reads the regular file `path` of at most `max_bytes`, checked as above
// with the directories that hold it. A missing file, a symbolic link, a
// directory, a FIFO or device, or a file above the cap is a usage error; one
// that cannot be opened, or that is not trusted, a runtime error.
Result<std::string> read_trusted_file(const std::string& what, const std::string& path, size_t max_bytes,
                                      const FileTrust& trust);

// Opens `path` for writing as a private file: created with mode 0600, or an
// existing regular file (emptied, its mode set to 0600); never through a
// final symbolic link, never a FIFO or device. Its directories are checked
// as above.
Result<UniqueFd> open_private_output(const std::string& what, const std::string& path, const FileTrust& trust);

}  // namespace tcptrace
