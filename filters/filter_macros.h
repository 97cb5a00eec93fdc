// Filter options -> preprocessor macros handed to BCC's clang.
//
// Every filter is a macro with a safe default in filters/tcptrace_filter.h
// (`#ifndef FILTER_X / #define FILTER_X 0`), so a filter the user did not ask
// for compiles to nothing. A port set becomes the case labels of a switch,
// which clang turns into a compare tree: `--sport 1-1024` is two comparisons,
// a thousand scattered ports about ten per event, and no map is involved.
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

struct FilterPlan {
  std::vector<std::string> cflags;  // "-DNAME=VALUE" strings
};

FilterPlan build_filter_plan(const FilterSpec& spec);

// Macro names the host defines itself; user -D macros may not use them.
bool is_reserved_macro_name(const std::string& name);

}  // namespace tcptrace
