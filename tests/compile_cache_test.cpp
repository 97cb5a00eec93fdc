// The compile cache (compile_cache.h): keys, hits, every way an entry goes
// stale or unusable, the directory's refusals, eviction and concurrent
// stores. Runs as any user; the cases that need another owner need root to
// chown and skip without it.
#include "compile_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

namespace tcptrace {

// Found by gtest through the enum's namespace (not in the unnamed one).
void PrintTo(CacheLookup::Outcome outcome, std::ostream* out) { *out << to_string(outcome); }

namespace {

namespace fs = std::filesystem;
using Outcome = CacheLookup::Outcome;

constexpr uint64_t kUnlimited = uint64_t{1} << 40;
constexpr uid_t kNobody = 65534;

std::string key_for(const std::string& name) {
  CacheKey key;
  key.add("name", name);
  return key.hex();
}

CompiledObject sample_object(const std::string& name = "kprobe__tcp_connect") {
  CompiledObject object;
  object.license = "GPL";
  object.kern_version = 0x060100;
  ObjectMap map;
  map.name = "events";
  map.type = 4;
  map.key_size = 4;
  map.value_size = 4;
  map.max_entries = 2;
  map.field_descriptions = {"saddr#unsigned int"};
  object.maps = {map};
  ObjectFunction function;
  function.name = name;
  function.instructions = {{0x18, 0x11, 0, 0}, {0, 0, 0, 0}, {0xb7, 0, 0, 0}, {0x95, 0, 0, 0}};
  function.map_references = {{0, 0}};
  object.functions = {function};
  return object;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Rewrites the file's content in place: same inode, owner and mode.
void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

void set_mtime(const fs::path& path, int64_t seconds_ago) {
  const struct timespec times[2] = {{0, UTIME_OMIT}, {::time(nullptr) - seconds_ago, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << path;
}

class CompileCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "tcptrace-cache-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    ASSERT_EQ(::chmod(root_.c_str(), 0700), 0);
    fs::create_directory(root_ / "include");
    header("a.h");
    cache_dir_ = (root_ / "cache").string();
  }
  void TearDown() override { fs::remove_all(root_); }

  CompileCache open_cache(uint64_t max_bytes = kUnlimited) {
    auto cache = CompileCache::open(cache_dir_, max_bytes);
    EXPECT_TRUE(cache.ok()) << cache.error().message;
    return std::move(cache).value();
  }

  // A header whose mtime is an hour old, so that any write to it (which
  // sets the mtime to now) shows whatever the clock's granularity.
  std::string header(const std::string& name, const std::string& text = "#define X 1\n") {
    const fs::path path = root_ / "include" / name;
    write_file(path, text);
    set_mtime(path, 3600);
    return path.string();
  }

  fs::path entry_path(const std::string& key) const { return fs::path(cache_dir_) / (key + ".entry"); }

  // An entry for `key` holding sample_object(), with one present header
  // (SetUp's a.h) and one missing header as dependencies.
  void store_sample(CompileCache& cache, const std::string& key) {
    const std::vector<FileIdentity> dependencies = {identify_file((root_ / "include" / "a.h").string()),
                                                    identify_file((root_ / "include" / "missing.h").string())};
    ASSERT_TRUE(cache.store(key, sample_object(), dependencies).ok());
  }

  void expect_unusable(const CompileCache& cache, const std::string& key, const std::string& reason) {
    const CacheLookup lookup = cache.find(key);
    EXPECT_EQ(lookup.outcome, Outcome::unusable) << lookup.reason;
    EXPECT_FALSE(lookup.object.has_value());
    EXPECT_NE(lookup.reason.find(reason), std::string::npos) << lookup.reason;
  }

  fs::path root_;
  std::string cache_dir_;
};

TEST(CacheKey, IsTheSha256OfItsLabelledInputs) {
  EXPECT_EQ(CacheKey().hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");  // of nothing
  CacheKey key;
  key.add("program", "int x;");
  const std::string hex = key.hex();
  EXPECT_EQ(hex.size(), 64u);
  EXPECT_EQ(hex.find_first_not_of("0123456789abcdef"), std::string::npos) << hex;
  EXPECT_EQ(key.hex(), hex) << "hex() does not change the key";
  CacheKey same;
  same.add("program", "int x;");
  EXPECT_EQ(same.hex(), hex);
}

TEST(CacheKey, EveryInputAndLabelChangesTheDigest) {
  const std::vector<std::pair<std::string, std::string>> inputs = {
      {"program", "int x;"}, {"flags", "-DPORT=80"}, {"kernel", "6.1.0-18-amd64"}};
  const auto digest = [](const std::vector<std::pair<std::string, std::string>>& adds) {
    CacheKey key;
    for (const auto& [label, value] : adds) key.add(label, value);
    return key.hex();
  };
  std::set<std::string> digests = {digest(inputs)};
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto changed = inputs;
    changed[i].first += "_";
    digests.insert(digest(changed));
    changed = inputs;
    changed[i].second += " ";
    digests.insert(digest(changed));
    changed = inputs;
    changed.erase(changed.begin() + static_cast<ptrdiff_t>(i));
    digests.insert(digest(changed));
  }
  auto swapped = inputs;
  std::swap(swapped[0], swapped[1]);
  digests.insert(digest(swapped));
  EXPECT_EQ(digests.size(), 1 + 3 * inputs.size() + 1) << "every change gives a digest of its own";
}

TEST(CacheKey, LengthPrefixesKeepInputsApart) {
  const auto digest = [](const std::vector<std::pair<std::string, std::string>>& adds) {
    CacheKey key;
    for (const auto& [label, value] : adds) key.add(label, value);
    return key.hex();
  };
  EXPECT_NE(digest({{"x", "ab"}, {"y", "c"}}), digest({{"x", "a"}, {"y", "bc"}}));
  EXPECT_NE(digest({{"ab", "c"}}), digest({{"a", "bc"}}));
  EXPECT_NE(digest({{"x", "a"}, {"x", "b"}}), digest({{"x", "ab"}}));
  EXPECT_NE(digest({{"x", ""}}), digest({}));
  EXPECT_NE(digest({{"", "x"}}), digest({{"x", ""}}));
}

TEST(CacheKey, ACopyGoesOnAlone) {
  CacheKey base;
  base.add("program", "int x;");
  CacheKey copy = base;
  copy.add("flags", "-O2");
  EXPECT_NE(copy.hex(), base.hex());
  CacheKey direct;
  direct.add("program", "int x;");
  direct.add("flags", "-O2");
  EXPECT_EQ(copy.hex(), direct.hex());
}

TEST_F(CompileCacheTest, OpenCreatesTheDirectoryAndItsParentsPrivate) {
  cache_dir_ = (root_ / "a" / "b" / "cache").string() + "/";
  CompileCache cache = open_cache();
  EXPECT_EQ(cache.dir(), cache_dir_);
  for (const fs::path& dir : {root_ / "a", root_ / "a" / "b", root_ / "a" / "b" / "cache"}) {
    struct stat st {};
    ASSERT_EQ(::stat(dir.c_str(), &st), 0) << dir;
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0700u) << dir;
  }
}

TEST_F(CompileCacheTest, StoreThenFindHitsWithAnEqualObject) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const CacheLookup lookup = cache.find(key);
  ASSERT_EQ(lookup.outcome, Outcome::hit) << lookup.reason;
  ASSERT_TRUE(lookup.object.has_value());
  EXPECT_EQ(*lookup.object, sample_object());
  EXPECT_EQ(lookup.reason, "");
  struct stat st {};
  ASSERT_EQ(::stat(entry_path(key).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(read_file(entry_path(key)).substr(0, 15), "TCPTRACE-CACHE\n");
  // Another instance on the same directory, as a later start would open it.
  EXPECT_EQ(open_cache().find(key).outcome, Outcome::hit);
}

TEST_F(CompileCacheTest, AMissingEntryIsAbsent) {
  CompileCache cache = open_cache();
  const CacheLookup lookup = cache.find(key_for("never stored"));
  EXPECT_EQ(lookup.outcome, Outcome::absent);
  EXPECT_FALSE(lookup.object.has_value());
}

TEST_F(CompileCacheTest, RemoveMakesAnEntryAbsent) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  cache.remove(key);
  EXPECT_EQ(cache.find(key).outcome, Outcome::absent);
  cache.remove(key);  // nothing to remove
}

TEST_F(CompileCacheTest, ATouchedHeaderMakesTheEntryStale) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const std::string path = (root_ / "include" / "a.h").string();
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), nullptr, 0), 0);
  const CacheLookup lookup = cache.find(key);
  EXPECT_EQ(lookup.outcome, Outcome::stale);
  EXPECT_FALSE(lookup.object.has_value());
  EXPECT_EQ(lookup.reason, "'" + path + "' changed");
}

TEST_F(CompileCacheTest, AHeaderRewrittenWithTheSameSizeMakesTheEntryStale) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const std::string path = (root_ / "include" / "a.h").string();
  write_file(path, "#define X 2\n");
  const CacheLookup lookup = cache.find(key);
  EXPECT_EQ(lookup.outcome, Outcome::stale);
  EXPECT_EQ(lookup.reason, "'" + path + "' changed");
}

TEST_F(CompileCacheTest, AHeaderReplacedByRenameMakesTheEntryStale) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const std::string path = (root_ / "include" / "a.h").string();
  const std::string copy = header("copy.h");  // same content, size and mtime
  fs::rename(copy, path);
  EXPECT_EQ(cache.find(key).outcome, Outcome::stale);
}

TEST_F(CompileCacheTest, ADeletedHeaderMakesTheEntryStale) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const std::string path = (root_ / "include" / "a.h").string();
  fs::remove(path);
  const CacheLookup lookup = cache.find(key);
  EXPECT_EQ(lookup.outcome, Outcome::stale);
  EXPECT_EQ(lookup.reason, "'" + path + "' no longer exists");
}

TEST_F(CompileCacheTest, AHeaderCreatedWhereItWasMissingMakesTheEntryStale) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const std::string path = header("missing.h");
  const CacheLookup lookup = cache.find(key);
  EXPECT_EQ(lookup.outcome, Outcome::stale);
  EXPECT_EQ(lookup.reason, "'" + path + "' now exists");
}

TEST_F(CompileCacheTest, StoreRefusesADependencyChangedSinceItWasIdentified) {
  CompileCache cache = open_cache();
  const FileIdentity before = identify_file(header("a.h"));
  write_file(before.path, "#define X 2\n");
  const Status stored = cache.store(key_for("a"), sample_object(), {before});
  ASSERT_FALSE(stored.ok());
  EXPECT_NE(stored.error().message.find("'" + before.path + "' changed since it was identified"), std::string::npos)
      << stored.error().message;
  EXPECT_EQ(cache.find(key_for("a")).outcome, Outcome::absent);
}

TEST_F(CompileCacheTest, EveryTruncationIsUnusable) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const std::string bytes = read_file(entry_path(key));
  for (size_t size = 0; size < bytes.size(); ++size) {
    SCOPED_TRACE("truncated to " + std::to_string(size) + " of " + std::to_string(bytes.size()));
    write_file(entry_path(key), bytes.substr(0, size));
    EXPECT_EQ(cache.find(key).outcome, Outcome::unusable);
  }
  write_file(entry_path(key), bytes.substr(0, bytes.size() - 1));
  expect_unusable(cache, key, "checksum mismatch");
  write_file(entry_path(key), "");
  expect_unusable(cache, key, "not a cache entry");
  write_file(entry_path(key), bytes + "x");
  expect_unusable(cache, key, "checksum mismatch");
}

TEST_F(CompileCacheTest, EveryFlippedByteIsUnusable) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const std::string bytes = read_file(entry_path(key));
  for (size_t at = 0; at < bytes.size(); ++at) {
    SCOPED_TRACE("byte " + std::to_string(at) + " of " + std::to_string(bytes.size()));
    std::string damaged = bytes;
    damaged[at] = static_cast<char>(damaged[at] ^ 0x01);
    write_file(entry_path(key), damaged);
    const CacheLookup lookup = cache.find(key);
    EXPECT_EQ(lookup.outcome, Outcome::unusable) << lookup.reason;
    EXPECT_FALSE(lookup.object.has_value());
  }
}

TEST_F(CompileCacheTest, AnotherFormatVersionIsUnusable) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  std::string bytes = read_file(entry_path(key));
  bytes[15] = static_cast<char>(kCacheFormatVersion + 1);  // the version follows the 15-byte magic
  write_file(entry_path(key), bytes);
  expect_unusable(cache, key, "format version " + std::to_string(kCacheFormatVersion + 1) + ", not " +
                                  std::to_string(kCacheFormatVersion));
}

TEST_F(CompileCacheTest, AnEntryUnderAnotherKeysNameIsUnusable) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const std::string other = key_for("b");
  fs::copy_file(entry_path(key), entry_path(other));
  expect_unusable(cache, other, "key mismatch");
}

TEST_F(CompileCacheTest, AKeyThatIsNoDigestIsRefused) {
  CompileCache cache = open_cache();
  for (const std::string& key : {std::string("../../etc/passwd"), std::string(""), std::string(64, 'A'),
                                 key_for("a").substr(1)}) {
    SCOPED_TRACE(key);
    expect_unusable(cache, key, "is not a cache key");
    const Status stored = cache.store(key, sample_object(), {});
    ASSERT_FALSE(stored.ok());
    EXPECT_NE(stored.error().message.find("is not a cache key"), std::string::npos) << stored.error().message;
  }
}

TEST_F(CompileCacheTest, AnEntryOthersCanWriteIsUnusable) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  ASSERT_EQ(::chmod(entry_path(key).c_str(), 0620), 0);
  expect_unusable(cache, key, "is writable by group or others (mode 0620)");
  ASSERT_EQ(::chmod(entry_path(key).c_str(), 0602), 0);
  expect_unusable(cache, key, "is writable by group or others (mode 0602)");
  ASSERT_EQ(::chmod(entry_path(key).c_str(), 0644), 0);
  EXPECT_EQ(cache.find(key).outcome, Outcome::hit) << "readable by others is fine";
}

TEST_F(CompileCacheTest, AnEntryOfAnotherOwnerIsUnusable) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown an entry to another user";
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  ASSERT_EQ(::chown(entry_path(key).c_str(), kNobody, kNobody), 0);
  expect_unusable(cache, key, "is owned by uid 65534, not 0");
}

TEST_F(CompileCacheTest, ASymbolicLinkOrNonFileAsEntryIsUnusable) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  const fs::path moved = root_ / "elsewhere.entry";
  fs::rename(entry_path(key), moved);
  fs::create_symlink(moved, entry_path(key));
  expect_unusable(cache, key, "is a symbolic link");
  fs::remove(entry_path(key));
  ASSERT_EQ(::mkfifo(entry_path(key).c_str(), 0600), 0);
  expect_unusable(cache, key, "is not a regular file");  // and the open does not block
  fs::remove(entry_path(key));
  fs::create_directory(entry_path(key));
  EXPECT_EQ(cache.find(key).outcome, Outcome::unusable);
}

TEST_F(CompileCacheTest, ADirectoryOthersCanWriteIsRefused) {
  fs::create_directory(cache_dir_);
  ASSERT_EQ(::chmod(cache_dir_.c_str(), 0777), 0);
  auto cache = CompileCache::open(cache_dir_, kUnlimited);
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.error().exit_code, ExitCode::runtime);
  EXPECT_EQ(cache.error().message, "compile cache: '" + cache_dir_ +
                                       "' is writable by group or others (mode 0777); whoever can write the cache "
                                       "chooses the code loaded (chmod go-w)");
  ASSERT_EQ(::chmod(cache_dir_.c_str(), 0750), 0);
  EXPECT_TRUE(CompileCache::open(cache_dir_, kUnlimited).ok()) << "readable by the group is fine";
}

TEST_F(CompileCacheTest, ADirectoryOfAnotherOwnerIsRefused) {
  // Root chowns one to nobody; anyone else has root's / at hand.
  uid_t owner = 0;
  if (::geteuid() == 0) {
    fs::create_directory(cache_dir_);
    ASSERT_EQ(::chown(cache_dir_.c_str(), kNobody, kNobody), 0);
    owner = kNobody;
  } else {
    cache_dir_ = "/";
  }
  auto cache = CompileCache::open(cache_dir_, kUnlimited);
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.error().message, "compile cache: '" + cache_dir_ + "' is owned by uid " + std::to_string(owner) +
                                       ", not the effective uid " + std::to_string(::geteuid()) +
                                       "; whoever can write the cache chooses the code loaded");
}

TEST_F(CompileCacheTest, AParentOthersCanWriteIsRefusedAsRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "the parents are checked only as root (trusted_file.h)";
  fs::create_directory(root_ / "open");
  ASSERT_EQ(::chmod((root_ / "open").c_str(), 0777), 0);
  cache_dir_ = (root_ / "open" / "cache").string();
  auto cache = CompileCache::open(cache_dir_, kUnlimited);
  ASSERT_FALSE(cache.ok());
  EXPECT_NE(cache.error().message.find("is writable by group or others (mode 0777)"), std::string::npos)
      << cache.error().message;
}

TEST_F(CompileCacheTest, ASymbolicLinkOrFileAsDirectoryIsRefused) {
  fs::create_directory(root_ / "real");
  ASSERT_EQ(::chmod((root_ / "real").c_str(), 0700), 0);
  fs::create_directory_symlink(root_ / "real", cache_dir_);
  for (const std::string& dir : {cache_dir_, cache_dir_ + "/"}) {
    auto cache = CompileCache::open(dir, kUnlimited);
    ASSERT_FALSE(cache.ok()) << dir;
    EXPECT_EQ(cache.error().message,
              "compile cache: '" + dir + "' is a symbolic link; give the directory it points to");
  }
  fs::remove(cache_dir_);
  write_file(cache_dir_, "");
  auto cache = CompileCache::open(cache_dir_, kUnlimited);
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.error().message, "compile cache: '" + cache_dir_ + "' is not a directory");
}

TEST_F(CompileCacheTest, AHitMarksTheEntryRecentlyUsed) {
  CompileCache cache = open_cache();
  const std::string key = key_for("a");
  store_sample(cache, key);
  set_mtime(entry_path(key), 7200);
  ASSERT_EQ(cache.find(key).outcome, Outcome::hit);
  struct stat st {};
  ASSERT_EQ(::stat(entry_path(key).c_str(), &st), 0);
  EXPECT_GT(st.st_mtime, ::time(nullptr) - 60);
}

class CompileCacheEviction : public CompileCacheTest {
 protected:
  // The size of one entry of store_sample() (every key has the same length).
  uint64_t entry_size() {
    CompileCache cache = open_cache();
    const std::string key = key_for("measure");
    store_sample(cache, key);
    const uint64_t size = fs::file_size(entry_path(key));
    cache.remove(key);
    return size;
  }
};

TEST_F(CompileCacheEviction, RemovesTheLeastRecentlyUsedEntry) {
  const uint64_t size = entry_size();
  CompileCache cache = open_cache(2 * size + size / 2);
  const std::string a = key_for("a"), b = key_for("b"), c = key_for("c");
  store_sample(cache, a);
  store_sample(cache, b);
  ASSERT_EQ(cache.find(a).outcome, Outcome::hit);  // a is now used after b
  store_sample(cache, c);
  EXPECT_EQ(cache.find(a).outcome, Outcome::hit);
  EXPECT_EQ(cache.find(b).outcome, Outcome::absent);
  EXPECT_EQ(cache.find(c).outcome, Outcome::hit);
}

TEST_F(CompileCacheEviction, WithoutHitsRemovesTheOldestStore) {
  const uint64_t size = entry_size();
  CompileCache cache = open_cache(2 * size + size / 2);
  const std::string a = key_for("a"), b = key_for("b"), c = key_for("c");
  store_sample(cache, a);
  store_sample(cache, b);
  store_sample(cache, c);
  EXPECT_EQ(cache.find(a).outcome, Outcome::absent);
  EXPECT_EQ(cache.find(b).outcome, Outcome::hit);
  EXPECT_EQ(cache.find(c).outcome, Outcome::hit);
}

TEST_F(CompileCacheEviction, NeverRemovesTheEntryJustWritten) {
  CompileCache cache = open_cache(0);
  const std::string a = key_for("a"), b = key_for("b");
  store_sample(cache, a);
  EXPECT_EQ(cache.find(a).outcome, Outcome::hit);
  store_sample(cache, b);
  EXPECT_EQ(cache.find(a).outcome, Outcome::absent);
  EXPECT_EQ(cache.find(b).outcome, Outcome::hit);
}

TEST_F(CompileCacheEviction, RemovesOnlyTemporaryFilesOverAnHourOld) {
  CompileCache cache = open_cache();
  const fs::path dir = cache_dir_;
  const fs::path crashed = dir / ("." + key_for("a") + ".0123456789abcdef.tmp");
  const fs::path writing = dir / ("." + key_for("b") + ".0123456789abcdef.tmp");
  const fs::path not_ours = dir / "notes.tmp";
  for (const fs::path& path : {crashed, writing, not_ours}) write_file(path, "partial");
  set_mtime(crashed, 3601 + 60);
  set_mtime(writing, 3600 - 60);
  set_mtime(not_ours, 7200);
  store_sample(cache, key_for("c"));
  EXPECT_FALSE(fs::exists(crashed));
  EXPECT_TRUE(fs::exists(writing));
  EXPECT_TRUE(fs::exists(not_ours));
}

TEST_F(CompileCacheTest, ConcurrentStoresOfOneKeyNeverShowAPartialEntry) {
  const std::string key = key_for("a");
  const std::vector<FileIdentity> dependencies = {identify_file((root_ / "include" / "a.h").string())};
  std::atomic<int> writers_left{2};
  std::atomic<int> store_errors{0};
  const auto writer = [&](const std::string& name) {
    CompileCache cache = open_cache();  // one each, as two processes would have
    for (int i = 0; i < 200; ++i) {
      if (!cache.store(key, sample_object(name), dependencies).ok()) ++store_errors;
    }
    --writers_left;
  };
  std::thread first(writer, "first");
  std::thread second(writer, "second");
  CompileCache reader = open_cache();
  int hits = 0, absents = 0;
  std::vector<std::string> others;
  while (writers_left > 0) {
    const CacheLookup lookup = reader.find(key);
    if (lookup.outcome == Outcome::hit) {
      ++hits;
      const std::string& name = lookup.object->functions.at(0).name;
      if (name != "first" && name != "second") others.push_back(name);
    } else if (lookup.outcome == Outcome::absent) {
      ++absents;
    } else {
      others.push_back(lookup.reason);
    }
  }
  first.join();
  second.join();
  EXPECT_EQ(store_errors, 0);
  EXPECT_TRUE(others.empty()) << others.size() << " finds neither hit nor absent, the first: " << others.front();
  EXPECT_GT(hits, 0) << absents << " absent";
  const CacheLookup last = reader.find(key);
  ASSERT_EQ(last.outcome, Outcome::hit) << last.reason;
  std::vector<std::string> files;
  for (const auto& item : fs::directory_iterator(cache_dir_)) files.push_back(item.path().filename().string());
  EXPECT_EQ(files, std::vector<std::string>{key + ".entry"}) << "no temporary file is left behind";
}

}  // namespace
}  // namespace tcptrace
