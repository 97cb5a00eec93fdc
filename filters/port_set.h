// A set of TCP ports given on the command line as "80,443,8000-8100".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace tcptrace {

struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;
  bool operator==(const PortRange&) const = default;
};

class PortSet {
 public:
  // Entries (ports or ranges, as given) a list may hold: each becomes a
  // switch case compiled into the program.
  static constexpr size_t kMaxEntries = 1024;

  // Ports are 1..65535 (0 is never a connection's port); ranges are
  // inclusive, FIRST <= LAST. Errors are usage errors naming `option`.
  static Result<PortSet> parse(std::string_view option, std::string_view text);

  // Sorted, overlapping and adjacent ranges merged.
  const std::vector<PortRange>& ranges() const { return ranges_; }
  size_t port_count() const;
  bool contains(uint16_t port) const;

 private:
  std::vector<PortRange> ranges_;
};

}  // namespace tcptrace
