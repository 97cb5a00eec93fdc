// Formatting hints: how a program asks for a field to be printed other than
// by its C type. The convention (documented in README, used by the built-in
// programs and by user programs alike) is a comment line in the BPF source:
//
//   // tcptrace:format saddr=ip(family) daddr=ip(family) skaddr=hex
//   // tcptrace:format oldstate=tcp_state outcome=enum(established,refused)
//
// Each token is FIELD=KIND or FIELD=KIND(ARG). A FIELD may be prefixed with a
// table name ("events.saddr=ip") to apply to one output table only. A comment
// keeps the source valid C for any compiler, and the host needs no second copy
// of the struct to know what a field means.
//
// Kinds:
//   ip(FAMILY_FIELD)  address bytes (u8[4], u8[16], u32, u32[4], __int128)
//                     printed as text; FAMILY_FIELD (default "family") holds
//                     4/6 or AF_INET/AF_INET6 and selects IPv4 or IPv6.
//   hex               integer as a "0x…" string.
//   tcp_state         integer TCP state printed as its name without TCP_.
//   errno             integer errno printed as its symbolic name ("ECONNREFUSED").
//   enum(A,B,C)       integer 0,1,2… printed as A,B,C.
//   string            u8/char array printed as a string (the default for char).
//   optional          null when every byte of the field is zero: a value the
//                     program could not know (states: the owner of a socket
//                     nobody holds). Otherwise printed as its other hint or
//                     its type says, so it combines with any kind
//                     ("pid=optional", "saddr=ip saddr=optional").
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace tcptrace {

enum class FieldFormat { by_type, ip_address, hex, tcp_state, errno_name, enumeration, string };

struct FormatHint {
  std::string table;  // empty: applies to every output table
  std::string field;
  FieldFormat format = FieldFormat::by_type;
  std::vector<std::string> arguments;  // ip: {family field}; enum: names
  bool null_when_zero = false;         // "optional": format stays as other hints set it
};

inline constexpr std::string_view kFormatHintMarker = "tcptrace:format";

// Collects the hints from every marker line of `source`. Errors name the line.
Result<std::vector<FormatHint>> parse_format_hints(std::string_view source);

// Name tables used by the kinds above; exposed for tests and documentation.
std::string_view tcp_state_name(uint64_t state);  // "" when unknown
std::string_view errno_name(uint64_t value);      // "" when unknown

}  // namespace tcptrace
