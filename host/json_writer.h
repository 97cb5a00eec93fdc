// JSON fragments, in two forms: `write_*` writes at a raw pointer and returns
// the end, for the per-event hot path, which reserves a line's worst case once
// and then writes without a capacity check per fragment; `append_*` appends to
// a caller-owned std::string (a thin wrapper around the writer) for the rest.
// No allocation beyond the string's own growth.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tcptrace::json {

// Worst-case lengths of what the writers below produce.
inline constexpr size_t kMaxIntChars = 20;          // "-9223372036854775808", 18446744073709551615
inline constexpr size_t kMaxExactIntChars = 22;     // the same in quotes
inline constexpr size_t kMaxHexStringChars = 20;    // "0x" + 16 digits, quoted
inline constexpr size_t kMaxIpv4StringChars = 17;   // "255.255.255.255"
inline constexpr size_t kMaxIpv6StringChars = 48;   // "ffff:...:ffff" or "::ffff:255.255.255.255", quoted
// A string of `bytes` input bytes: quotes, and each byte at most six
// characters (\u00XX; an invalid byte becomes three, U+FFFD).
constexpr size_t max_string_chars(size_t bytes) { return 2 + 6 * bytes; }
constexpr size_t max_key_chars(std::string_view key) { return key.size() + 3; }

char* write_string(char* p, std::string_view bytes);
char* write_uint(char* p, uint64_t value);
char* write_int(char* p, int64_t value);
char* write_uint_exact(char* p, uint64_t value);
char* write_int_exact(char* p, int64_t value);
char* write_hex_string(char* p, uint64_t value);
char* write_ipv4_string(char* p, const unsigned char* bytes);
char* write_ipv6_string(char* p, const unsigned char* bytes);
char* write_key(char* p, std::string_view key);

// Appends `bytes` as a JSON string literal (with quotes). Escapes per RFC 8259
// (quote, backslash, every control character below 0x20 and DEL as \u00XX or
// the short forms) and replaces each byte that is not part of a well-formed
// UTF-8 sequence with U+FFFD, so any byte string yields valid JSON.
void append_string(std::string& out, std::string_view bytes);

void append_uint(std::string& out, uint64_t value);
void append_int(std::string& out, int64_t value);

// Numbers a double cannot represent exactly (|v| > 2^53) become strings:
// jq and JavaScript parse JSON numbers as doubles and would silently round.
void append_uint_exact(std::string& out, uint64_t value);
void append_int_exact(std::string& out, int64_t value);

// "0x" followed by lower-case hex digits, as a JSON string.
void append_hex_string(std::string& out, uint64_t value);

// IP addresses as JSON strings, exactly as inet_ntop(3) writes them (RFC
// 5952 for IPv6: lower case, the longest run of two or more zero groups as
// "::", IPv4-mapped and -compatible addresses with a dotted tail) but without
// its printf machinery, which cost more than all the rest of an event.
void append_ipv4_string(std::string& out, const unsigned char* bytes);
void append_ipv6_string(std::string& out, const unsigned char* bytes);

// Appends `"key":` (key is trusted, already valid: struct member names).
void append_key(std::string& out, std::string_view key);

inline constexpr uint64_t kMaxExactDouble = uint64_t{1} << 53;

}  // namespace tcptrace::json
