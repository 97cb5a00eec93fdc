// Filter options -> preprocessor macros handed to BCC's clang.
//
// Every filter is a macro with a safe default in filters/tcptrace_filter.h
// (`#ifndef FILTER_X / #define FILTER_X 0`), so a filter the user did not ask
// for compiles to nothing. Port sets with a few ranges become an inline
// comparison expression; larger ones become a 64 Ki-entry BPF array the host
// fills after loading, so `--sport` with a thousand ports neither bloats the
// program nor slows clang down.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "port_set.h"

namespace tcptrace {

struct FilterSpec {
  std::optional<PortSet> sport;
  std::optional<PortSet> dport;
  int family = 0;  // 0: both, 4: IPv4 only, 6: IPv6 only
  std::optional<uint32_t> pid;
  std::optional<uint64_t> min_us;
  bool no_failures = false;
};

// A BPF array (declared by tcptrace_filter.h) the host must fill with 1 at
// every port of `ports` once the program is loaded.
struct PortTableFill {
  std::string table;
  PortSet ports;
};

struct FilterPlan {
  std::vector<std::string> cflags;  // "-DNAME=VALUE" strings
  std::vector<PortTableFill> table_fills;
};

// Above this many ranges a port set goes into a map instead of inline code.
inline constexpr size_t kMaxInlinePortRanges = 8;

FilterPlan build_filter_plan(const FilterSpec& spec);

// Macro names the host defines itself; user -D macros may not use them.
bool is_reserved_macro_name(const std::string& name);

}  // namespace tcptrace
