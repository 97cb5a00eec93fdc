#include "trusted_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace tcptrace {
namespace fs = std::filesystem;

namespace {

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

std::string quoted(const std::string& path) { return "'" + path + "'"; }

// Usage errors for what the path names (nothing there, a link, not a file);
// runtime errors for what the system refused.
Error open_error(const std::string& what, const std::string& path, int err, const char* verb) {
  if (err == ENOENT) return usage_error(what + ": " + quoted(path) + " does not exist");
  if (err == ELOOP) {
    return usage_error(what + ": " + quoted(path) + " is a symbolic link; give the file it points to");
  }
  return runtime_error(what + ": cannot " + verb + " " + quoted(path) + ": " + std::strerror(err));
}

Status check_kind(const std::string& what, const std::string& path, const struct stat& st) {
  if (S_ISLNK(st.st_mode)) {
    return usage_error(what + ": " + quoted(path) + " is a symbolic link; give the file it points to");
  }
  if (S_ISDIR(st.st_mode)) return usage_error(what + ": " + quoted(path) + " is a directory");
  if (!S_ISREG(st.st_mode)) {
    return usage_error(what + ": " + quoted(path) + " is not a regular file (a FIFO, socket or device)");
  }
  return {};
}

Status check_trusted(const std::string& what, const std::string& path, const struct stat& st,
                     const FileTrust& trust) {
  if (std::string reason = untrusted_reason(path, st, trust); !reason.empty()) {
    return runtime_error(what + ": " + reason);
  }
  return {};
}

// The directory that holds `path`, for the directory checks.
std::string holding_directory(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

}  // namespace

FileTrust file_trust_for_this_process() {
  FileTrust trust;
  trust.check_owners = ::geteuid() == 0;
  trust.trusted_owners = {0, ::getuid()};
  if (const char* sudo_uid = std::getenv("SUDO_UID"); sudo_uid != nullptr) {
    uid_t uid = 0;
    const char* end = sudo_uid + std::strlen(sudo_uid);
    if (auto [ptr, ec] = std::from_chars(sudo_uid, end, uid); ec == std::errc() && ptr == end) {
      trust.trusted_owners.push_back(uid);
    }
  }
  return trust;
}

std::string untrusted_reason(const std::string& path, const struct stat& st, const FileTrust& trust) {
  if (!trust.check_owners) return "";
  const auto& owners = trust.trusted_owners;
  if (std::find(owners.begin(), owners.end(), st.st_uid) == owners.end()) {
    return quoted(path) + " is owned by uid " + std::to_string(st.st_uid) +
           ", neither root nor the user running the tool; refusing it as root";
  }
  const bool sticky_directory = S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX) != 0;
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && !sticky_directory) {
    return quoted(path) + " is writable by group or others (mode " + octal_mode(st.st_mode) +
           "); refusing it as root (chmod go-w)";
  }
  return "";
}

Status check_trusted_directory(const std::string& what, const std::string& dir, const FileTrust& trust) {
  if (!trust.check_owners) return {};
  std::error_code ec;
  fs::path at = fs::canonical(dir, ec);
  if (ec) return runtime_error(what + ": cannot resolve " + quoted(dir) + ": " + ec.message());
  while (true) {
    struct stat st {};
    if (::stat(at.c_str(), &st) != 0) {
      return runtime_error(what + ": cannot stat " + quoted(at.string()) + ": " + std::strerror(errno));
    }
    if (Status s = check_trusted(what, at.string(), st, trust); !s) return s;
    if (at == at.root_path()) return {};
    at = at.parent_path();
  }
}

Result<std::string> read_trusted_file(const std::string& what, const std::string& path, size_t max_bytes,
                                      const FileTrust& trust) {
  // Looked at before opening: opening a device can have effects of its own.
  struct stat named {};
  if (::lstat(path.c_str(), &named) != 0) return open_error(what, path, errno, "read");
  if (Status s = check_kind(what, path, named); !s) return std::move(s).take_error();
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) return open_error(what, path, errno, "read");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return open_error(what, path, errno, "read");
  // The name may have been replaced between the two looks.
  if (Status s = check_kind(what, path, st); !s) return std::move(s).take_error();
  if (Status s = check_trusted(what, path, st, trust); !s) return std::move(s).take_error();
  if (Status s = check_trusted_directory(what, holding_directory(path), trust); !s) return std::move(s).take_error();
  const std::string too_large =
      what + ": " + quoted(path) + " is larger than " + std::to_string(max_bytes) + " bytes";
  if (static_cast<uint64_t>(st.st_size) > max_bytes) return usage_error(too_large);
  // Read to the end, never past the cap: the file may grow while it is read.
  std::string text;
  text.resize(max_bytes + 1);
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return runtime_error(what + ": cannot read " + quoted(path) + ": " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > max_bytes) return usage_error(too_large);
  text.resize(got);
  return text;
}

Result<UniqueFd> open_private_output(const std::string& what, const std::string& path, const FileTrust& trust) {
  if (Status s = check_trusted_directory(what, holding_directory(path), trust); !s) return std::move(s).take_error();
  struct stat named {};
  if (::lstat(path.c_str(), &named) == 0) {
    if (Status s = check_kind(what, path, named); !s) return std::move(s).take_error();
  }
  // Not O_TRUNC: an existing file is emptied only once it is known to be a
  // regular file of a trusted owner with no other names.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    if (errno == ELOOP) return open_error(what, path, errno, "create");
    return runtime_error(what + ": cannot create " + quoted(path) + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return open_error(what, path, errno, "create");
  if (Status s = check_kind(what, path, st); !s) return std::move(s).take_error();
  if (Status s = check_trusted(what, path, st, trust); !s) return std::move(s).take_error();
  // Another name for the same file (a hard link to /etc/shadow) would be
  // emptied and overwritten through this one.
  if (st.st_nlink > 1) {
    return runtime_error(what + ": " + quoted(path) + " has other hard links; refusing to overwrite it");
  }
  if (::ftruncate(fd.get(), 0) != 0 || ::fchmod(fd.get(), 0600) != 0) {
    return runtime_error(what + ": cannot create " + quoted(path) + ": " + std::strerror(errno));
  }
  if (const int flags = ::fcntl(fd.get(), F_GETFL); flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

}  // namespace tcptrace
