#include "compile_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <tuple>

#include "byte_codec.h"
#include "trusted_file.h"

namespace tcptrace {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kMagic = "TCPTRACE-CACHE\n";
constexpr size_t kChecksumBytes = 32;
constexpr std::string_view kEntrySuffix = ".entry";
constexpr std::string_view kTempSuffix = ".tmp";
// A temporary file this old is a crashed writer's: a store takes moments.
constexpr int64_t kStaleTempSeconds = 3600;

std::string in_quotes(const std::string& path) { return "'" + path + "'"; }

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

int64_t nanoseconds(const struct timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The clock stores and hits stamp entries with. Set explicitly rather than
// left to the file system, whose timestamps come from a coarse clock: two
// uses within one tick would otherwise look equally recent.
struct timespec now() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

void set_mtime(int fd, const struct timespec& when) {
  const struct timespec times[2] = {{0, UTIME_OMIT}, when};
  ::futimens(fd, times);
}

std::string sha256(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  const int ok = EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(), nullptr);
  assert(ok == 1 && size == kChecksumBytes);
  (void)ok;
  return std::string(reinterpret_cast<const char*>(digest), size);
}

bool is_cache_key(std::string_view key) {
  return key.size() == 64 &&
         std::all_of(key.begin(), key.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

std::string random_hex() {
  static std::atomic<uint64_t> counter{0};
  uint64_t bits = 0;
  if (::getrandom(&bits, sizeof bits, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof bits)) {
    bits = static_cast<uint64_t>(::getpid()) << 32 ^ static_cast<uint64_t>(nanoseconds(now()));
  }
  bits ^= counter.fetch_add(1);
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(bits));
  return text;
}

std::string encode_entry(const std::string& key, const CompiledObject& object,
                         const std::vector<FileIdentity>& dependencies) {
  ByteWriter out;
  out.raw(kMagic);
  out.u32(kCacheFormatVersion);
  out.string(key);
  out.u32(static_cast<uint32_t>(dependencies.size()));
  for (const FileIdentity& file : dependencies) {
    out.string(file.path);
    out.u8(file.exists ? 1 : 0);
    out.u64(file.device);
    out.u64(file.inode);
    out.u64(file.size);
    out.integer(file.mtime_ns);
    out.integer(file.ctime_ns);
  }
  out.string(serialize_object(object));
  std::string bytes = std::move(out).take();
  bytes += sha256(bytes);
  return bytes;
}

struct Entry {
  std::string key;
  std::vector<FileIdentity> dependencies;
  CompiledObject object;
};

// Errors say why the entry is unusable.
Result<Entry> decode_entry(std::string_view bytes) {
  if (bytes.size() < kMagic.size() || bytes.substr(0, kMagic.size()) != kMagic) {
    return runtime_error("not a cache entry (no magic)");
  }
  {
    ByteReader header(bytes.substr(kMagic.size()), "cache entry");
    const uint32_t version = header.u32("format version");
    if (header.failed()) return runtime_error(header.error());
    if (version != kCacheFormatVersion) {
      return runtime_error("format version " + std::to_string(version) + ", not " +
                           std::to_string(kCacheFormatVersion));
    }
  }
  if (bytes.size() < kMagic.size() + 4 + kChecksumBytes) return runtime_error("truncated before its checksum");
  const std::string_view body = bytes.substr(0, bytes.size() - kChecksumBytes);
  if (sha256(body) != bytes.substr(body.size())) return runtime_error("checksum mismatch");

  ByteReader in(body.substr(kMagic.size() + 4), "cache entry");
  Entry entry;
  entry.key = in.string("key");
  // path, exists, device, inode, size, mtime, ctime
  const uint32_t dependencies = in.count("dependencies", 4 + 1 + 5 * 8);
  entry.dependencies.reserve(dependencies);
  for (uint32_t i = 0; i < dependencies; ++i) {
    FileIdentity file;
    file.path = in.string("dependency path");
    const uint8_t exists = in.u8("dependency");
    if (exists > 1) in.fail("dependency exists flag " + std::to_string(exists));
    file.exists = exists == 1;
    file.device = in.u64("dependency");
    file.inode = in.u64("dependency");
    file.size = in.u64("dependency");
    file.mtime_ns = in.i64("dependency");
    file.ctime_ns = in.i64("dependency");
    entry.dependencies.push_back(std::move(file));
  }
  const std::string object = in.string("object");
  in.expect_end();
  if (in.failed()) return runtime_error(in.error());
  Result<CompiledObject> parsed = parse_object(object);
  if (!parsed) return std::move(parsed).take_error();
  entry.object = std::move(parsed).value();
  return entry;
}

std::string dependency_change(const FileIdentity& stored, const FileIdentity& current) {
  if (stored.exists && !current.exists) return in_quotes(stored.path) + " no longer exists";
  if (!stored.exists && current.exists) return in_quotes(stored.path) + " now exists";
  return in_quotes(stored.path) + " changed";
}

CacheLookup unusable(std::string reason) {
  CacheLookup lookup;
  lookup.outcome = CacheLookup::Outcome::unusable;
  lookup.reason = std::move(reason);
  return lookup;
}

// Creates `path` and its missing parents, each with mode 0700.
Status create_directories(const std::string& what, const fs::path& path) {
  fs::path at;
  for (const fs::path& part : path) {
    at /= part;
    if (part == at.root_path() || part.empty()) continue;
    if (::mkdir(at.c_str(), 0700) != 0 && errno != EEXIST) {
      return runtime_error(what + ": cannot create " + in_quotes(at.string()) + ": " + std::strerror(errno));
    }
  }
  return {};
}

Status write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return runtime_error(std::strerror(errno));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

}  // namespace

FileIdentity identify_file(const std::string& path) {
  FileIdentity file;
  file.path = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return file;
  file.exists = true;
  file.device = st.st_dev;
  file.inode = st.st_ino;
  file.size = static_cast<uint64_t>(st.st_size);
  file.mtime_ns = nanoseconds(st.st_mtim);
  file.ctime_ns = nanoseconds(st.st_ctim);
  return file;
}

std::string_view to_string(CacheLookup::Outcome outcome) {
  switch (outcome) {
    case CacheLookup::Outcome::hit: return "hit";
    case CacheLookup::Outcome::absent: return "absent";
    case CacheLookup::Outcome::stale: return "stale";
    case CacheLookup::Outcome::unusable: return "unusable";
  }
  return "unknown";
}

struct CacheKey::Digest {
  Digest() : context(EVP_MD_CTX_new()) {
    const int ok = context != nullptr && EVP_DigestInit_ex(context, EVP_sha256(), nullptr) == 1;
    assert(ok);
    (void)ok;
  }
  Digest(const Digest& other) : context(EVP_MD_CTX_new()) {
    const int ok = context != nullptr && EVP_MD_CTX_copy_ex(context, other.context) == 1;
    assert(ok);
    (void)ok;
  }
  Digest& operator=(const Digest&) = delete;
  ~Digest() { EVP_MD_CTX_free(context); }

  void update(std::string_view bytes) {
    const int ok = EVP_DigestUpdate(context, bytes.data(), bytes.size());
    assert(ok == 1);
    (void)ok;
  }

  EVP_MD_CTX* context;
};

CacheKey::CacheKey() : digest_(std::make_unique<Digest>()) {}
CacheKey::CacheKey(const CacheKey& other) : digest_(std::make_unique<Digest>(*other.digest_)) {}
CacheKey& CacheKey::operator=(const CacheKey& other) {
  if (this != &other) digest_ = std::make_unique<Digest>(*other.digest_);
  return *this;
}
CacheKey::CacheKey(CacheKey&&) noexcept = default;
CacheKey& CacheKey::operator=(CacheKey&&) noexcept = default;
CacheKey::~CacheKey() = default;

void CacheKey::add(std::string_view label, std::string_view value) {
  ByteWriter lengths;
  lengths.u64(label.size());
  digest_->update(lengths.bytes());
  digest_->update(label);
  ByteWriter value_length;
  value_length.u64(value.size());
  digest_->update(value_length.bytes());
  digest_->update(value);
}

std::string CacheKey::hex() const {
  Digest copy(*digest_);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  const int ok = EVP_DigestFinal_ex(copy.context, digest, &size);
  assert(ok == 1 && size == kChecksumBytes);
  (void)ok;
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string text;
  for (unsigned int i = 0; i < size; ++i) {
    text.push_back(kDigits[digest[i] >> 4]);
    text.push_back(kDigits[digest[i] & 0x0f]);
  }
  return text;
}

Result<CompileCache> CompileCache::open(const std::string& dir, uint64_t max_bytes) {
  const std::string what = "compile cache";
  if (dir.empty()) return runtime_error(what + ": the directory name is empty");
  // Without trailing slashes: "dir/" would follow a symbolic link even with
  // O_NOFOLLOW.
  std::string path = dir;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  if (Status s = create_directories(what, path); !s) return std::move(s).take_error();

  const std::string parent = fs::path(path).has_parent_path() ? fs::path(path).parent_path().string() : ".";
  if (Status s = check_trusted_directory(what, parent, file_trust_for_this_process()); !s) {
    return std::move(s).take_error();
  }
  const auto refuse = [&](const std::string& why) { return runtime_error(what + ": " + in_quotes(dir) + " " + why); };
  struct stat named {};
  if (::lstat(path.c_str(), &named) != 0) return refuse(std::string("cannot be read: ") + std::strerror(errno));
  if (S_ISLNK(named.st_mode)) return refuse("is a symbolic link; give the directory it points to");
  if (!S_ISDIR(named.st_mode)) return refuse("is not a directory");
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return refuse(std::string("cannot be opened: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return refuse(std::string("cannot be read: ") + std::strerror(errno));
  if (st.st_dev != named.st_dev || st.st_ino != named.st_ino) return refuse("was replaced while being opened");
  if (st.st_uid != ::geteuid()) {
    return refuse("is owned by uid " + std::to_string(st.st_uid) + ", not the effective uid " +
                  std::to_string(::geteuid()) + "; whoever can write the cache chooses the code loaded");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return refuse("is writable by group or others (mode " + octal_mode(st.st_mode) +
                  "); whoever can write the cache chooses the code loaded (chmod go-w)");
  }
  return CompileCache(dir, std::move(fd), max_bytes);
}

CacheLookup CompileCache::find(const std::string& key) const {
  if (!is_cache_key(key)) return unusable(in_quotes(key) + " is not a cache key");
  const std::string name = key + std::string(kEntrySuffix);
  const std::string path = (fs::path(dir_) / name).string();
  UniqueFd fd(::openat(dir_fd_.get(), name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return CacheLookup{};
    if (errno == ELOOP) return unusable(in_quotes(path) + " is a symbolic link");
    return unusable(in_quotes(path) + " cannot be opened: " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return unusable(in_quotes(path) + " cannot be read: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return unusable(in_quotes(path) + " is not a regular file");
  if (st.st_uid != ::geteuid()) {
    return unusable(in_quotes(path) + " is owned by uid " + std::to_string(st.st_uid) + ", not " +
                    std::to_string(::geteuid()));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return unusable(in_quotes(path) + " is writable by group or others (mode " + octal_mode(st.st_mode) + ")");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxCacheEntryBytes) {
    return unusable(in_quotes(path) + " is larger than " + std::to_string(kMaxCacheEntryBytes) + " bytes");
  }
  // To the end, never past the cap: the size is only what fstat saw.
  std::string bytes(static_cast<size_t>(st.st_size) + 1, '\0');
  size_t got = 0;
  while (true) {
    if (got == bytes.size()) {
      if (bytes.size() > kMaxCacheEntryBytes) {
        return unusable(in_quotes(path) + " is larger than " + std::to_string(kMaxCacheEntryBytes) + " bytes");
      }
      bytes.resize(std::min<size_t>(bytes.size() * 2, kMaxCacheEntryBytes + 1));
    }
    const ssize_t n = ::read(fd.get(), bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return unusable(in_quotes(path) + " cannot be read: " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  bytes.resize(got);

  Result<Entry> entry = decode_entry(bytes);
  if (!entry) return unusable(in_quotes(path) + ": " + entry.error().message);
  if (entry->key != key) return unusable(in_quotes(path) + ": key mismatch (it holds " + in_quotes(entry->key) + ")");
  for (const FileIdentity& stored : entry->dependencies) {
    if (const FileIdentity current = identify_file(stored.path); current != stored) {
      CacheLookup lookup;
      lookup.outcome = CacheLookup::Outcome::stale;
      lookup.reason = dependency_change(stored, current);
      return lookup;
    }
  }
  set_mtime(fd.get(), now());
  CacheLookup lookup;
  lookup.outcome = CacheLookup::Outcome::hit;
  lookup.object = std::move(entry->object);
  return lookup;
}

Status CompileCache::store(const std::string& key, const CompiledObject& object,
                           const std::vector<FileIdentity>& dependencies) {
  const std::string what = "compile cache " + in_quotes(dir_);
  if (!is_cache_key(key)) return runtime_error(what + ": " + in_quotes(key) + " is not a cache key");
  // A dependency that changed since it was identified may have changed
  // after the compiler read it: the object may not match either version.
  for (const FileIdentity& file : dependencies) {
    if (identify_file(file.path) != file) {
      return runtime_error(what + ": not storing " + key + ": " + dependency_change(file, identify_file(file.path)) +
                           " since it was identified");
    }
  }
  const std::string bytes = encode_entry(key, object, dependencies);

  std::string temp;
  UniqueFd fd;
  for (int attempt = 0; attempt < 16 && !fd.valid(); ++attempt) {
    temp = "." + key + "." + random_hex() + std::string(kTempSuffix);
    fd.reset(::openat(dir_fd_.get(), temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.valid() && errno != EEXIST) break;
  }
  if (!fd.valid()) return runtime_error(what + ": cannot create a temporary file: " + std::strerror(errno));
  const auto fail = [&](const std::string& step) {
    const std::string error = std::strerror(errno);
    ::unlinkat(dir_fd_.get(), temp.c_str(), 0);
    return runtime_error(what + ": cannot " + step + " " + in_quotes(temp) + ": " + error);
  };
  // 0600 whatever the umask: find() wants the owner's read bit and no other.
  if (::fchmod(fd.get(), 0600) != 0) return fail("set the mode of");
  if (Status s = write_all(fd.get(), bytes); !s) {
    ::unlinkat(dir_fd_.get(), temp.c_str(), 0);
    return runtime_error(what + ": cannot write " + in_quotes(temp) + ": " + s.error().message);
  }
  set_mtime(fd.get(), now());
  if (::fsync(fd.get()) != 0) return fail("sync");
  fd.reset();
  const std::string name = key + std::string(kEntrySuffix);
  if (::renameat(dir_fd_.get(), temp.c_str(), dir_fd_.get(), name.c_str()) != 0) return fail("rename");
  evict(name);
  return {};
}

void CompileCache::remove(const std::string& key) {
  if (!is_cache_key(key)) return;
  ::unlinkat(dir_fd_.get(), (key + std::string(kEntrySuffix)).c_str(), 0);
}

void CompileCache::evict(const std::string& kept_name) {
  // A directory stream of its own: a dup of dir_fd_ would share its offset
  // with every other thread evicting through this cache.
  const int list_fd = ::openat(dir_fd_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (list_fd < 0) return;
  DIR* listing = ::fdopendir(list_fd);
  if (listing == nullptr) {
    ::close(list_fd);
    return;
  }
  struct Candidate {
    int64_t used_ns;
    std::string name;
    uint64_t size;
  };
  std::vector<Candidate> entries;
  uint64_t total = 0;
  const int64_t temp_deadline_ns = nanoseconds(now()) - kStaleTempSeconds * 1'000'000'000;
  while (const struct dirent* item = ::readdir(listing)) {
    const std::string_view name = item->d_name;
    const bool entry = ends_with(name, kEntrySuffix);
    const bool temp = name.size() > 1 && name.front() == '.' && ends_with(name, kTempSuffix);
    if (!entry && !temp) continue;
    struct stat st {};
    if (::fstatat(dir_fd_.get(), item->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    if (temp) {
      if (nanoseconds(st.st_mtim) < temp_deadline_ns) ::unlinkat(dir_fd_.get(), item->d_name, 0);
      continue;
    }
    entries.push_back({nanoseconds(st.st_mtim), std::string(name), static_cast<uint64_t>(st.st_size)});
    total += static_cast<uint64_t>(st.st_size);
  }
  ::closedir(listing);
  std::sort(entries.begin(), entries.end(), [](const Candidate& a, const Candidate& b) {
    return std::tie(a.used_ns, a.name) < std::tie(b.used_ns, b.name);
  });
  for (const Candidate& candidate : entries) {
    if (total <= max_bytes_) break;
    if (candidate.name == kept_name) continue;
    ::unlinkat(dir_fd_.get(), candidate.name.c_str(), 0);
    total -= candidate.size;
  }
}

}  // namespace tcptrace
