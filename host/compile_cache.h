// A verified cache of compiled BPF objects, so a start whose program, flags,
// kernel and headers are unchanged loads the previous compile's instructions
// instead of running clang again.
//
// Correctness comes first: an entry is used only when its checksum, key and
// every dependency still match, and anything doubtful is a miss, never a
// wrong object. Entries are loaded into the kernel, so the directory and the
// entries must belong to the effective user and be writable by nobody else;
// whoever could write them could choose the code that gets loaded.
//
// An entry, <dir>/<key>.entry:
//   "TCPTRACE-CACHE\n", format version (u32), the key, the dependencies,
//   the serialized object (compiled_object.h), then the SHA-256 of all of
//   the bytes before it.
// Integers are little-endian, strings and lists length-prefixed
// (byte_codec.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "compiled_object.h"
#include "result.h"
#include "unique_fd.h"

namespace tcptrace {

// The identity of a file an entry depends on. Any write to a file changes
// its ctime, so equal (device, inode, size, mtime, ctime) means unchanged.
// A missing file (exists=false) is a dependency too: a header that must stay
// absent for the compiler to resolve an include the same way.
//
// Timestamps only tell writes apart at the file system's clock granularity
// (a few milliseconds), so callers identify dependencies before the compile
// reads them; store() refuses them if they changed by the time it runs.
struct FileIdentity {
  std::string path;
  bool exists = false;
  uint64_t device = 0;
  uint64_t inode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;

  bool operator==(const FileIdentity&) const = default;
};

// stat(), following symbolic links; a file that cannot be stat'ed is missing.
FileIdentity identify_file(const std::string& path);

// SHA-256 over labelled, length-prefixed inputs: ("ab", "c") and ("a", "bc")
// differ, and so does one value under another label.
class CacheKey {
 public:
  CacheKey();
  CacheKey(const CacheKey& other);
  CacheKey& operator=(const CacheKey& other);
  CacheKey(CacheKey&&) noexcept;
  CacheKey& operator=(CacheKey&&) noexcept;
  ~CacheKey();

  void add(std::string_view label, std::string_view value);
  // 64 lowercase hex digits; more add()s may follow.
  std::string hex() const;

 private:
  struct Digest;
  std::unique_ptr<Digest> digest_;
};

struct CacheLookup {
  enum class Outcome {
    hit,       // `object` is the stored compile
    absent,    // no entry for the key
    stale,     // a dependency changed since the store; `reason` names it
    unusable,  // corrupt, truncated, wrong owner or mode, wrong format
               // version, checksum or key mismatch; `reason` says which
  };
  Outcome outcome = Outcome::absent;
  std::optional<CompiledObject> object;
  std::string reason;
};

// "hit", "absent", "stale", "unusable".
std::string_view to_string(CacheLookup::Outcome outcome);

// The entry format written; an entry of any other version is unusable.
inline constexpr uint32_t kCacheFormatVersion = 1;
// Largest entry find() reads, in bytes.
inline constexpr uint64_t kMaxCacheEntryBytes = uint64_t{256} << 20;

class CompileCache {
 public:
  // Creates `dir` (and missing parents) with mode 0700 if needed. Refuses,
  // with a runtime error naming the directory and why, a directory that is a
  // symbolic link, is not owned by the effective uid, or is writable by group
  // or others; when running as root, also one whose parents another user
  // could write (trusted_file.h's rule for a program's directories).
  // All later access goes through the directory opened here, so renaming
  // another directory into its place changes nothing.
  static Result<CompileCache> open(const std::string& dir, uint64_t max_bytes);

  const std::string& dir() const { return dir_; }

  // Reads <dir>/<key>.entry without following a symbolic link. Unusable
  // unless it is a regular file owned by the effective uid with no group or
  // other write bit, it parses, its checksum matches and its stored key is
  // `key`; stale if any stored dependency's identify_file() differs now. On
  // a hit the entry's mtime is set to now, so eviction removes the least
  // recently used entries first. A key that is not 64 lowercase hex digits
  // is unusable.
  CacheLookup find(const std::string& key) const;

  // Writes the entry to a new private temporary file in the directory
  // (".<key>.<random>.tmp"), syncs it and renames it over <key>.entry, so a
  // reader sees a whole entry or none, and of two concurrent stores of one
  // key the last rename wins. Then, while the *.entry files total more than
  // max_bytes, removes the one least recently used (never the one just
  // written), and removes temporary files over an hour old (a crashed
  // writer's). A dependency that no longer matches its identity, or a key
  // that is not 64 lowercase hex digits, is an error and nothing is stored.
  Status store(const std::string& key, const CompiledObject& object, const std::vector<FileIdentity>& dependencies);

  // Removes the entry, if any: the verifier refused what it holds.
  void remove(const std::string& key);

 private:
  CompileCache(std::string dir, UniqueFd dir_fd, uint64_t max_bytes)
      : dir_(std::move(dir)), dir_fd_(std::move(dir_fd)), max_bytes_(max_bytes) {}
  void evict(const std::string& kept_name);

  std::string dir_;
  UniqueFd dir_fd_;
  uint64_t max_bytes_ = 0;
};

}  // namespace tcptrace
