// Little-endian, length-prefixed binary encoding for the files the host
// writes for itself (compiled_object.h, compile_cache.h).
//
// ByteReader keeps the first error and reads zeros after it, so a parser
// checks failed() at the end instead of after every field; counts read after
// an error are 0, so no loop runs on garbage. Every length and count is held
// against the bytes that remain before anything is allocated for it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace tcptrace {

class ByteWriter {
 public:
  template <class T>
  void integer(T value) {
    static_assert(std::is_integral_v<T>);
    using U = std::make_unsigned_t<T>;
    const U bits = static_cast<U>(value);
    for (size_t i = 0; i < sizeof(T); ++i) bytes_.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
  void u8(uint8_t value) { integer(value); }
  void u32(uint32_t value) { integer(value); }
  void u64(uint64_t value) { integer(value); }
  void string(std::string_view value) {
    u32(static_cast<uint32_t>(value.size()));
    bytes_.append(value);
  }
  void raw(std::string_view value) { bytes_.append(value); }

  const std::string& bytes() const& { return bytes_; }
  std::string&& take() && { return std::move(bytes_); }

 private:
  std::string bytes_;
};

class ByteReader {
 public:
  // `what` names the encoding in error messages ("compiled object").
  ByteReader(std::string_view bytes, std::string what) : all_(bytes), rest_(bytes), what_(std::move(what)) {}

  template <class T>
  T integer(const char* field) {
    static_assert(std::is_integral_v<T>);
    if (!take(sizeof(T), field)) return 0;
    using U = std::make_unsigned_t<T>;
    U bits = 0;
    for (size_t i = 0; i < sizeof(T); ++i) bits |= static_cast<U>(static_cast<uint8_t>(taken_[i])) << (8 * i);
    return static_cast<T>(bits);
  }
  uint8_t u8(const char* field) { return integer<uint8_t>(field); }
  uint32_t u32(const char* field) { return integer<uint32_t>(field); }
  uint64_t u64(const char* field) { return integer<uint64_t>(field); }
  int64_t i64(const char* field) { return integer<int64_t>(field); }

  std::string string(const char* field) {
    const uint32_t size = u32(field);
    if (!take(size, field)) return {};
    return std::string(taken_);
  }
  std::string_view raw(size_t size, const char* field) { return take(size, field) ? taken_ : std::string_view(); }

  // A count of items that each take at least `min_item_bytes`; more than
  // the remaining bytes can hold is an error (and 0).
  uint32_t count(const char* field, size_t min_item_bytes) {
    const uint32_t n = u32(field);
    if (failed()) return 0;
    if (min_item_bytes > 0 && n > rest_.size() / min_item_bytes) {
      fail(std::string(field) + " count " + std::to_string(n) + " exceeds the remaining " +
           std::to_string(rest_.size()) + " bytes");
      return 0;
    }
    return n;
  }

  // Records the first error, at the current offset.
  void fail(const std::string& message) {
    if (!failed()) error_ = what_ + ": " + message + " (at byte " + std::to_string(offset()) + ")";
    rest_ = {};
  }
  void expect_end() {
    if (!failed() && !rest_.empty()) fail(std::to_string(rest_.size()) + " trailing bytes");
  }

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  size_t offset() const { return all_.size() - rest_.size(); }
  size_t remaining() const { return rest_.size(); }

 private:
  bool take(size_t size, const char* field) {
    if (failed()) return false;
    if (size > rest_.size()) {
      fail(std::string("truncated in ") + field + " (" + std::to_string(size) + " bytes needed, " +
           std::to_string(rest_.size()) + " remain)");
      return false;
    }
    taken_ = rest_.substr(0, size);
    rest_.remove_prefix(size);
    return true;
  }

  std::string_view all_;
  std::string_view rest_;
  std::string_view taken_;
  std::string what_;
  std::string error_;
};

}  // namespace tcptrace
