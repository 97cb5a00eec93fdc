#include "json_writer.h"

#include <charconv>
#include <cstring>

#include "utf8.h"

namespace tcptrace::json {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

// Copies a short literal (escape sequences, quotes).
char* put(char* p, std::string_view text) {
  for (char c : text) *p++ = c;
  return p;
}

}  // namespace

char* write_string(char* p, std::string_view bytes) {
  *p++ = '"';
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      *p++ = static_cast<char>(c);
      ++i;
      continue;
    }
    switch (c) {
      case '"': p = put(p, "\\\""); ++i; continue;
      case '\\': p = put(p, "\\\\"); ++i; continue;
      case '\n': p = put(p, "\\n"); ++i; continue;
      case '\r': p = put(p, "\\r"); ++i; continue;
      case '\t': p = put(p, "\\t"); ++i; continue;
      case '\b': p = put(p, "\\b"); ++i; continue;
      case '\f': p = put(p, "\\f"); ++i; continue;
      default: break;
    }
    if (c < 0x20 || c == 0x7F) {
      p = put(p, "\\u00");
      *p++ = kHexDigits[c >> 4];
      *p++ = kHexDigits[c & 0xF];
      ++i;
      continue;
    }
    const size_t n = utf8_sequence_length(bytes, i);
    if (n == 0) {
      p = put(p, "\xEF\xBF\xBD");  // U+FFFD REPLACEMENT CHARACTER
      ++i;
    } else {
      for (size_t k = 0; k < n; ++k) *p++ = bytes[i + k];
      i += n;
    }
  }
  *p++ = '"';
  return p;
}

char* write_uint(char* p, uint64_t value) {
  return std::to_chars(p, p + kMaxIntChars, value).ptr;
}

char* write_int(char* p, int64_t value) {
  return std::to_chars(p, p + kMaxIntChars, value).ptr;
}

char* write_uint_exact(char* p, uint64_t value) {
  if (value <= kMaxExactDouble) return write_uint(p, value);
  *p++ = '"';
  p = write_uint(p, value);
  *p++ = '"';
  return p;
}

char* write_int_exact(char* p, int64_t value) {
  const bool exact = value >= -static_cast<int64_t>(kMaxExactDouble) &&
                     value <= static_cast<int64_t>(kMaxExactDouble);
  if (exact) return write_int(p, value);
  *p++ = '"';
  p = write_int(p, value);
  *p++ = '"';
  return p;
}

char* write_hex_string(char* p, uint64_t value) {
  p = put(p, "\"0x");
  p = std::to_chars(p, p + 16, value, 16).ptr;
  *p++ = '"';
  return p;
}

namespace {

// "0." to "255." for every byte value, so a dotted quad is four copies
// instead of divisions (addresses are a quarter of a states event's text).
struct OctetTable {
  char text[256][4];
  unsigned char length[256];
  constexpr OctetTable() : text{}, length{} {
    for (unsigned v = 0; v < 256; ++v) {
      unsigned char n = 0;
      if (v >= 100) text[v][n++] = static_cast<char>('0' + v / 100);
      if (v >= 10) text[v][n++] = static_cast<char>('0' + v / 10 % 10);
      text[v][n++] = static_cast<char>('0' + v % 10);
      text[v][n] = '.';
      length[v] = n;
    }
  }
};
constexpr OctetTable kOctets;

// Writes the dotted quad (no quotes). Each octet is copied with its trailing
// dot (four bytes at once); the last dot is overwritten by the caller's next
// character or left past the returned end.
char* write_dotted_quad(char* p, const unsigned char* b) {
  for (int i = 0; i < 4; ++i) {
    std::memcpy(p, kOctets.text[b[i]], 4);
    p += kOctets.length[b[i]] + 1;
  }
  return p - 1;
}

}  // namespace

char* write_ipv4_string(char* p, const unsigned char* bytes) {
  *p++ = '"';
  p = write_dotted_quad(p, bytes);
  *p++ = '"';
  return p;
}

char* write_ipv6_string(char* p, const unsigned char* bytes) {
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
  *p++ = '"';
  for (int i = 0; i < 8; ++i) {
    if (best_base >= 0 && i >= best_base && i < best_base + best_len) {
      if (i == best_base) *p++ = ':';
      continue;
    }
    if (i > 0) *p++ = ':';
    // glibc's inet_ntop: "::a.b.c.d" for IPv4-compatible (six zero words)
    // and "::ffff:a.b.c.d" for IPv4-mapped addresses.
    if (i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))) {
      p = write_dotted_quad(p, bytes + 12);
      break;
    }
    bool started = false;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const unsigned digit = (words[i] >> shift) & 0xF;
      if (digit == 0 && !started && shift > 0) continue;
      started = true;
      *p++ = kHexDigits[digit];
    }
  }
  if (best_base >= 0 && best_base + best_len == 8) *p++ = ':';
  *p++ = '"';
  return p;
}

char* write_key(char* p, std::string_view key) {
  *p++ = '"';
  p = put(p, key);
  *p++ = '"';
  *p++ = ':';
  return p;
}

namespace {

// Runs `write` on `max_chars` of room at the end of `out`, then trims `out`
// to what was written.
template <typename Write>
void append_with(std::string& out, size_t max_chars, Write write) {
  const size_t start = out.size();
  out.resize(start + max_chars);
  char* end = write(out.data() + start);
  out.resize(static_cast<size_t>(end - out.data()));
}

// A fragment of known bounded size, written on the stack and appended.
template <size_t MaxChars, typename Value>
void append_bounded(std::string& out, char* (*write)(char*, Value), Value value) {
  char buf[MaxChars];
  out.append(buf, write(buf, value));
}

}  // namespace

void append_string(std::string& out, std::string_view bytes) {
  append_with(out, max_string_chars(bytes.size()), [&](char* p) { return write_string(p, bytes); });
}

void append_uint(std::string& out, uint64_t value) { append_bounded<kMaxIntChars>(out, write_uint, value); }
void append_int(std::string& out, int64_t value) { append_bounded<kMaxIntChars>(out, write_int, value); }
void append_uint_exact(std::string& out, uint64_t value) {
  append_bounded<kMaxExactIntChars>(out, write_uint_exact, value);
}
void append_int_exact(std::string& out, int64_t value) {
  append_bounded<kMaxExactIntChars>(out, write_int_exact, value);
}
void append_hex_string(std::string& out, uint64_t value) {
  append_bounded<kMaxHexStringChars>(out, write_hex_string, value);
}
void append_ipv4_string(std::string& out, const unsigned char* bytes) {
  append_bounded<kMaxIpv4StringChars>(out, write_ipv4_string, bytes);
}
void append_ipv6_string(std::string& out, const unsigned char* bytes) {
  append_bounded<kMaxIpv6StringChars>(out, write_ipv6_string, bytes);
}

void append_key(std::string& out, std::string_view key) {
  append_with(out, max_key_chars(key), [&](char* p) { return write_key(p, key); });
}

}  // namespace tcptrace::json
