#include "json_writer.h"

#include <charconv>

namespace tcptrace::json {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when the
// bytes there are not one (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
size_t utf8_sequence_length(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  const size_t left = s.size() - i;
  auto cont = [&](size_t k) { return (byte(k) & 0xC0) == 0x80; };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    return left >= 2 && cont(i + 1) ? 2 : 0;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    const unsigned char b1 = byte(i + 1);
    if (b0 == 0xE0 && b1 < 0xA0) return 0;  // overlong
    if (b0 == 0xED && b1 > 0x9F) return 0;  // UTF-16 surrogate
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (left < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    const unsigned char b1 = byte(i + 1);
    if (b0 == 0xF0 && b1 < 0x90) return 0;  // overlong
    if (b0 == 0xF4 && b1 > 0x8F) return 0;  // beyond U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace

void append_string(std::string& out, std::string_view bytes) {
  out.push_back('"');
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      // Copy the longest run of plain ASCII at once.
      size_t j = i + 1;
      while (j < bytes.size()) {
        const unsigned char d = static_cast<unsigned char>(bytes[j]);
        if (d < 0x20 || d >= 0x7F || d == '"' || d == '\\') break;
        ++j;
      }
      out.append(bytes.data() + i, j - i);
      i = j;
      continue;
    }
    switch (c) {
      case '"': out.append("\\\""); ++i; continue;
      case '\\': out.append("\\\\"); ++i; continue;
      case '\n': out.append("\\n"); ++i; continue;
      case '\r': out.append("\\r"); ++i; continue;
      case '\t': out.append("\\t"); ++i; continue;
      case '\b': out.append("\\b"); ++i; continue;
      case '\f': out.append("\\f"); ++i; continue;
      default: break;
    }
    if (c < 0x20 || c == 0x7F) {
      const char esc[] = {'\\', 'u', '0', '0', kHexDigits[c >> 4], kHexDigits[c & 0xF]};
      out.append(esc, sizeof esc);
      ++i;
      continue;
    }
    const size_t n = utf8_sequence_length(bytes, i);
    if (n == 0) {
      out.append("\xEF\xBF\xBD");  // U+FFFD REPLACEMENT CHARACTER
      ++i;
    } else {
      out.append(bytes.data() + i, n);
      i += n;
    }
  }
  out.push_back('"');
}

void append_uint(std::string& out, uint64_t value) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, end);
}

void append_int(std::string& out, int64_t value) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, end);
}

void append_uint_exact(std::string& out, uint64_t value) {
  if (value <= kMaxExactDouble) {
    append_uint(out, value);
    return;
  }
  out.push_back('"');
  append_uint(out, value);
  out.push_back('"');
}

void append_int_exact(std::string& out, int64_t value) {
  const bool exact = value >= -static_cast<int64_t>(kMaxExactDouble) &&
                     value <= static_cast<int64_t>(kMaxExactDouble);
  if (exact) {
    append_int(out, value);
    return;
  }
  out.push_back('"');
  append_int(out, value);
  out.push_back('"');
}

void append_hex_string(std::string& out, uint64_t value) {
  char buf[20];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, 16);
  out.append("\"0x");
  out.append(buf, end);
  out.push_back('"');
}

namespace {

// Writes the dotted quad into `text`; returns the length.
size_t format_ipv4(char* text, const unsigned char* b) {
  size_t n = 0;
  for (int i = 0; i < 4; ++i) {
    if (i > 0) text[n++] = '.';
    const unsigned v = b[i];
    if (v >= 100) text[n++] = static_cast<char>('0' + v / 100);
    if (v >= 10) text[n++] = static_cast<char>('0' + v / 10 % 10);
    text[n++] = static_cast<char>('0' + v % 10);
  }
  return n;
}

}  // namespace

void append_ipv4_string(std::string& out, const unsigned char* bytes) {
  char text[18];
  size_t n = 0;
  text[n++] = '"';
  n += format_ipv4(text + n, bytes);
  text[n++] = '"';
  out.append(text, n);
}

void append_ipv6_string(std::string& out, const unsigned char* bytes) {
  unsigned words[8];
  for (int i = 0; i < 8; ++i) words[i] = static_cast<unsigned>(bytes[2 * i]) << 8 | bytes[2 * i + 1];
  // The longest run of zero words (the first of equal ones), if >= 2.
  int best_base = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (words[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && words[j] == 0) ++j;
    if (j - i > best_len) {
      best_base = i;
      best_len = j - i;
    }
    i = j;
  }
  if (best_len < 2) best_base = -1;
  char text[48];
  size_t n = 0;
  text[n++] = '"';
  for (int i = 0; i < 8; ++i) {
    if (best_base >= 0 && i >= best_base && i < best_base + best_len) {
      if (i == best_base) text[n++] = ':';
      continue;
    }
    if (i > 0) text[n++] = ':';
    // glibc's inet_ntop: "::a.b.c.d" for IPv4-compatible (six zero words)
    // and "::ffff:a.b.c.d" for IPv4-mapped addresses.
    if (i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))) {
      n += format_ipv4(text + n, bytes + 12);
      break;
    }
    bool started = false;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const unsigned digit = (words[i] >> shift) & 0xF;
      if (digit == 0 && !started && shift > 0) continue;
      started = true;
      text[n++] = kHexDigits[digit];
    }
  }
  if (best_base >= 0 && best_base + best_len == 8) text[n++] = ':';
  text[n++] = '"';
  out.append(text, n);
}

void append_key(std::string& out, std::string_view key) {
  out.push_back('"');
  out.append(key);
  out.append("\":");
}

}  // namespace tcptrace::json
