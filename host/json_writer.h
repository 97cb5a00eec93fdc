// Appends JSON fragments to a caller-owned std::string. No allocation beyond
// the string's own growth, so the per-event hot path can reuse one buffer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tcptrace::json {

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
