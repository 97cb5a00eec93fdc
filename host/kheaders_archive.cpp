#include "kheaders_archive.h"

#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "unique_fd.h"

namespace tcptrace {
namespace {

constexpr size_t kBlock = 512;

// Reads the decompressed bytes of an .xz file, in order, exactly as asked.
class XzReader {
 public:
  explicit XzReader(int fd) : fd_(fd) {}
  ~XzReader() { lzma_end(&stream_); }
  XzReader(const XzReader&) = delete;
  XzReader& operator=(const XzReader&) = delete;

  Status open() {
    // The kernel's archive is made by `xz --check=crc32`; any check is
    // accepted and verified. No memory limit beyond liblzma's default:
    // the input is the kernel's own file.
    if (lzma_stream_decoder(&stream_, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK) {
      return runtime_error("cannot start the xz decoder");
    }
    return {};
  }

  // Fills `out` with the next `size` bytes; false (with error() set, or at
  // the end of the stream) when there are not that many.
  bool read(uint8_t* out, size_t size) {
    while (size > 0) {
      if (out_pos_ == out_end_) {
        if (!refill()) return false;
        continue;
      }
      const size_t n = std::min(size, out_end_ - out_pos_);
      std::memcpy(out, out_buffer_.data() + out_pos_, n);
      out_pos_ += n;
      out += n;
      size -= n;
    }
    return true;
  }

  const std::string& error() const { return error_; }

 private:
  bool refill() {
    if (finished_) return false;
    stream_.next_out = out_buffer_.data();
    stream_.avail_out = out_buffer_.size();
    while (stream_.avail_out == out_buffer_.size()) {
      lzma_action action = LZMA_RUN;
      if (stream_.avail_in == 0 && !input_done_) {
        const ssize_t n = ::read(fd_, in_buffer_.data(), in_buffer_.size());
        if (n < 0) {
          if (errno == EINTR) continue;
          error_ = std::string("reading the archive: ") + std::strerror(errno);
          return false;
        }
        stream_.next_in = in_buffer_.data();
        stream_.avail_in = static_cast<size_t>(n);
        input_done_ = n == 0;
      }
      if (input_done_) action = LZMA_FINISH;
      const lzma_ret ret = lzma_code(&stream_, action);
      if (ret == LZMA_STREAM_END) {
        finished_ = true;
        break;
      }
      if (ret != LZMA_OK) {
        error_ = "the archive is not a valid xz stream (liblzma error " + std::to_string(static_cast<int>(ret)) + ")";
        return false;
      }
    }
    out_pos_ = 0;
    out_end_ = out_buffer_.size() - stream_.avail_out;
    return out_end_ > 0;
  }

  int fd_;
  lzma_stream stream_ = LZMA_STREAM_INIT;
  std::vector<uint8_t> in_buffer_ = std::vector<uint8_t>(64 * 1024);
  std::vector<uint8_t> out_buffer_ = std::vector<uint8_t>(64 * 1024);
  size_t out_pos_ = 0;
  size_t out_end_ = 0;
  bool input_done_ = false;
  bool finished_ = false;
  std::string error_;
};

std::string field_text(const uint8_t* field, size_t size) {
  size_t n = 0;
  while (n < size && field[n] != 0) ++n;
  return std::string(reinterpret_cast<const char*>(field), n);
}

// Numbers in a tar header: octal text, or big-endian binary when the first
// byte's high bit is set (GNU tar's form for sizes of 8 GiB and more).
std::optional<uint64_t> field_number(const uint8_t* field, size_t size) {
  if (field[0] & 0x80) {
    uint64_t value = field[0] & 0x7f;
    for (size_t i = 1; i < size; ++i) {
      if (value >> 56) return std::nullopt;
      value = (value << 8) | field[i];
    }
    return value;
  }
  uint64_t value = 0;
  size_t i = 0;
  while (i < size && field[i] == ' ') ++i;
  bool digits = false;
  for (; i < size && field[i] >= '0' && field[i] <= '7'; ++i) {
    if (value >> 60) return std::nullopt;
    value = value * 8 + (field[i] - '0');
    digits = true;
  }
  if (!digits) return std::nullopt;
  return value;
}

bool checksum_matches(const uint8_t* header) {
  const auto stored = field_number(header + 148, 8);
  if (!stored) return false;
  uint64_t sum = 0;
  for (size_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : header[i];
  return sum == *stored;
}

// "./include/linux/kconfig.h" -> {"include", "linux", "kconfig.h"}; nullopt
// for a name that is absolute or steps up with "..".
std::optional<std::vector<std::string>> safe_components(const std::string& name) {
  if (name.empty() || name.front() == '/') return std::nullopt;
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    std::string part = name.substr(start, end - start);
    if (part == "..") return std::nullopt;
    if (!part.empty() && part != ".") parts.push_back(std::move(part));
    start = end + 1;
  }
  return parts;
}

// Opens (creating when missing) each directory of `parts` below `root`,
// never following a symbolic link.
Result<UniqueFd> open_directories(int root, const std::vector<std::string>& parts, size_t count,
                                  UnpackedArchive& counts) {
  UniqueFd current(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  for (size_t i = 0; i < count; ++i) {
    int fd = ::openat(current.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
      if (::mkdirat(current.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
        return runtime_error("cannot create directory '" + parts[i] + "': " + std::strerror(errno));
      }
      ++counts.directories;
      fd = ::openat(current.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) return runtime_error("cannot open directory '" + parts[i] + "': " + std::strerror(errno));
    current = UniqueFd(fd);
  }
  return current;
}

Status write_all_bytes(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return runtime_error(std::strerror(errno));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return {};
}

// The value of `key` in a pax extended header's records ("LEN key=value\n").
std::optional<std::string> pax_value(const std::string& records, const std::string& key) {
  size_t pos = 0;
  while (pos < records.size()) {
    const size_t space = records.find(' ', pos);
    if (space == std::string::npos) break;
    size_t length = 0;
    for (size_t i = pos; i < space; ++i) {
      if (records[i] < '0' || records[i] > '9') return std::nullopt;
      length = length * 10 + (records[i] - '0');
    }
    if (length == 0 || pos + length > records.size()) return std::nullopt;
    const std::string record = records.substr(space + 1, pos + length - space - 2);  // without the '\n'
    const size_t equals = record.find('=');
    if (equals != std::string::npos && record.compare(0, equals, key) == 0 && equals == key.size()) {
      return record.substr(equals + 1);
    }
    pos += length;
  }
  return std::nullopt;
}

}  // namespace

Result<UnpackedArchive> unpack_kheaders_archive(const std::string& archive, int dir_fd) {
  UniqueFd file(::open(archive.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file.valid()) return runtime_error("cannot open " + archive + ": " + std::strerror(errno));
  XzReader xz(file.get());
  if (Status s = xz.open(); !s) return std::move(s).take_error();
  auto failed = [&](const std::string& what) { return runtime_error("cannot unpack " + archive + ": " + what); };

  UnpackedArchive counts;
  std::optional<std::string> long_name;  // from a GNU 'L' entry or a pax 'path', for the next entry
  std::vector<uint8_t> data(64 * 1024);
  uint8_t header[kBlock];
  for (;;) {
    if (!xz.read(header, kBlock)) return failed(xz.error().empty() ? "it ends without an end-of-archive block" : xz.error());
    bool zero = true;
    for (uint8_t byte : header) zero &= byte == 0;
    if (zero) break;  // end of archive
    if (!checksum_matches(header)) return failed("a header's checksum is wrong");
    const auto size = field_number(header + 124, 12);
    if (!size) return failed("a header has no valid size");
    const char type = static_cast<char>(header[156]);
    const uint64_t padded = (*size + kBlock - 1) / kBlock * kBlock;

    // Reads the entry's data (and its padding), handing each piece to `sink`.
    auto read_data = [&](const auto& sink) -> Status {
      uint64_t left = padded;
      uint64_t payload = *size;
      while (left > 0) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(left, data.size()));
        if (!xz.read(data.data(), n)) return failed(xz.error().empty() ? "an entry is cut short" : xz.error());
        const size_t useful = static_cast<size_t>(std::min<uint64_t>(payload, n));
        if (useful > 0) {
          if (Status s = sink(data.data(), useful); !s) return s;
        }
        payload -= useful;
        left -= n;
      }
      return {};
    };
    auto discard = [](const uint8_t*, size_t) -> Status { return {}; };

    if (type == 'L' || type == 'x') {
      if (*size > 64 * 1024) return failed("an extended header is too long");
      std::string text;
      if (Status s = read_data([&](const uint8_t* p, size_t n) -> Status {
            text.append(reinterpret_cast<const char*>(p), n);
            return {};
          });
          !s)
        return std::move(s).take_error();
      if (type == 'L') {
        long_name = field_text(reinterpret_cast<const uint8_t*>(text.data()), text.size());
      } else if (auto path = pax_value(text, "path")) {
        long_name = *path;
      }
      continue;
    }

    std::string name = long_name ? *long_name : field_text(header, 100);
    long_name.reset();
    // POSIX ustar splits long names into prefix/name; GNU tar's own format
    // ("ustar  ") uses that space for other fields.
    if (std::memcmp(header + 257, "ustar\0", 6) == 0 && header[345] != 0 && name == field_text(header, 100)) {
      name = field_text(header + 345, 155) + "/" + name;
    }

    const bool regular = type == '0' || type == '\0' || type == '7';
    const bool directory = type == '5';
    if (!regular && !directory) {
      // Links, devices, fifos, global pax headers, GNU 'K': nothing unpacked.
      if (type != 'g' && type != 'K') ++counts.skipped;
      if (Status s = read_data(discard); !s) return std::move(s).take_error();
      continue;
    }
    const auto parts = safe_components(name);
    if (!parts) return failed("refusing the entry '" + name + "' (absolute or with '..')");
    if (parts->empty()) {  // "./": the target directory itself
      if (Status s = read_data(discard); !s) return std::move(s).take_error();
      continue;
    }
    auto parent = open_directories(dir_fd, *parts, directory ? parts->size() : parts->size() - 1, counts);
    if (!parent) return failed(parent.error().message);
    if (directory) {
      if (Status s = read_data(discard); !s) return std::move(s).take_error();
      continue;
    }
    UniqueFd out(::openat(parent->get(), parts->back().c_str(),
                          O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!out.valid()) return failed("cannot create '" + name + "': " + std::strerror(errno));
    if (Status s = read_data([&](const uint8_t* p, size_t n) -> Status {
          if (Status w = write_all_bytes(out.get(), p, n); !w) return failed("writing '" + name + "': " + w.error().message);
          return {};
        });
        !s)
      return std::move(s).take_error();
    ++counts.files;
  }
  return counts;
}

}  // namespace tcptrace
