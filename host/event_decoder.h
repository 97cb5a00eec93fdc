// Turns raw event bytes into one JSON line, driven only by an EventLayout
// (from BCC's field descriptions) and the program's format hints. The same
// decoder serves the built-in programs and user programs: a struct member's
// name is its JSON key, its C type or hint decides how the value is printed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "event_layout.h"
#include "format_hints.h"
#include "result.h"
#include "wall_clock.h"

namespace tcptrace {

struct DecoderOptions {
  // When set, every line starts with "event":"<name>" (programs that write to
  // several output tables).
  std::string event_name;
  // Adds "time" (RFC 3339, UTC, microseconds) as the first field. Taken from a
  // `ts_us` member (CLOCK_MONOTONIC µs, what bpf_ktime_get_ns() counts) when the
  // struct has one, so it is the time of the kernel event, not of decoding.
  bool add_time = true;
};

class EventDecoder {
 public:
  static Result<EventDecoder> make(EventLayout layout, const std::vector<FormatHint>& hints,
                                   const std::string& table_name, DecoderOptions options,
                                   const WallClock& clock);

  // Appends one JSON object and '\n'. Returns false, appending nothing, when
  // `size` is shorter than the struct (a truncated sample must never be read
  // past its end).
  bool append_json(std::string& out, const void* data, size_t size) const;

  const EventLayout& layout() const { return layout_; }
  // The longest line (newline included) append_json() can write.
  size_t max_line_chars() const { return max_line_chars_; }

 private:
  struct FieldPlan {
    FieldLayout field;
    FieldFormat format = FieldFormat::by_type;
    std::string key;  // pre-rendered "name":
    // ip: the family member. A copy, not a pointer into layout_, so that a
    // copied decoder never refers to the one it was copied from.
    FieldLayout family;
    std::vector<std::string> enum_names;  // as JSON strings, quotes included
    bool plain_integer = false;  // a by-type scalar of at most 64 bits
    bool null_when_zero = false;  // "optional": all-zero bytes print as null
  };

  EventDecoder(EventLayout layout, DecoderOptions options, const WallClock& clock)
      : layout_(std::move(layout)), options_(std::move(options)), clock_(&clock) {}

  // Writes one member's value at `p` (room for max_field_chars(plan)).
  char* write_field(char* p, const FieldPlan& plan, const unsigned char* data) const;
  static size_t max_field_chars(const FieldPlan& plan);

  EventLayout layout_;
  DecoderOptions options_;
  const WallClock* clock_;
  std::vector<FieldPlan> plans_;
  std::string prefix_;  // "{" plus the event name, rendered once
  std::optional<size_t> ts_us_offset_;
  size_t max_line_chars_ = 0;  // the longest line any event can produce  // of a u64 `ts_us` member, when there is one
};

}  // namespace tcptrace
