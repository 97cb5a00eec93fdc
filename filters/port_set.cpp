#include "port_set.h"

#include <algorithm>
#include <charconv>

namespace tcptrace {
namespace {

Result<uint16_t> parse_port(std::string_view option, std::string_view text) {
  const std::string where = option.empty() ? "" : std::string(option) + ": ";
  if (text.empty()) return usage_error(where + "empty port in list");
  uint32_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && ptr == text.data() + text.size() && value > 65535)) {
    return usage_error(where + "port '" + std::string(text) + "' is out of range (1-65535)");
  }
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return usage_error(where + "'" + std::string(text) + "' is not a port number");
  }
  if (value == 0) return usage_error(where + "port 0 is not a valid port (1-65535)");
  return static_cast<uint16_t>(value);
}

}  // namespace

Result<PortSet> PortSet::parse(std::string_view option, std::string_view text) {
  const std::string where = std::string(option) + ": ";
  if (text.empty()) return usage_error(where + "empty port list");
  PortSet set;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    std::string_view item = text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    PortRange range;
    if (const size_t dash = item.find('-'); dash != std::string_view::npos) {
      auto first = parse_port(option, item.substr(0, dash));
      if (!first) return std::move(first).take_error();
      auto last = parse_port(option, item.substr(dash + 1));
      if (!last) return std::move(last).take_error();
      if (*first > *last) {
        return usage_error(where + "range '" + std::string(item) + "' ends before it starts");
      }
      range = {*first, *last};
    } else {
      auto port = parse_port(option, item);
      if (!port) return std::move(port).take_error();
      range = {*port, *port};
    }
    if (set.ranges_.size() == kMaxEntries) {
      return usage_error(where + "more than " + std::to_string(kMaxEntries) +
                         " entries in the port list (give ranges: 8000-8100)");
    }
    set.ranges_.push_back(range);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  std::sort(set.ranges_.begin(), set.ranges_.end(),
            [](const PortRange& a, const PortRange& b) { return a.first < b.first; });
  std::vector<PortRange> merged;
  for (const PortRange& r : set.ranges_) {
    if (!merged.empty() && static_cast<uint32_t>(r.first) <= static_cast<uint32_t>(merged.back().last) + 1) {
      merged.back().last = std::max(merged.back().last, r.last);
    } else {
      merged.push_back(r);
    }
  }
  set.ranges_ = std::move(merged);
  return set;
}

size_t PortSet::port_count() const {
  size_t n = 0;
  for (const PortRange& r : ranges_) n += static_cast<size_t>(r.last) - r.first + 1;
  return n;
}

bool PortSet::contains(uint16_t port) const {
  for (const PortRange& r : ranges_) {
    if (port >= r.first && port <= r.last) return true;
  }
  return false;
}

}  // namespace tcptrace
