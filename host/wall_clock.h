// Converts kernel CLOCK_MONOTONIC timestamps (bpf_ktime_get_ns) to wall-clock
// RFC 3339 strings. The offset between the two clocks is sampled once at
// start; NTP slews both clocks alike, so the offset drifts only on a step of
// the wall clock, which a tracer of TCP events can accept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tcptrace {

class WallClock {
 public:
  WallClock();                               // samples the offset now
  explicit WallClock(int64_t realtime_minus_monotonic_ns)
      : offset_ns_(realtime_minus_monotonic_ns) {}

  // Appends "2026-11-21T22:50:41.123456Z" (with quotes) for a monotonic time.
  void append_rfc3339_from_monotonic_us(std::string& out, uint64_t monotonic_us) const;
  // The same written at `p` (room for kMaxRfc3339Chars); returns the end.
  char* write_rfc3339_from_monotonic_us(char* p, uint64_t monotonic_us) const;
  // The same for the current wall-clock time.
  void append_rfc3339_now(std::string& out) const;
  // The same for a wall-clock time in µs since the epoch.
  void append_rfc3339_realtime_us(std::string& out, int64_t realtime_us) const;
  char* write_rfc3339_realtime_us(char* p, int64_t realtime_us) const;
  char* write_rfc3339_now(char* p) const;

  // Quotes, the cached date text, ".uuuuuu" and "Z".
  static constexpr size_t kMaxRfc3339Chars = 2 + 40 + 8;

 private:
  int64_t offset_ns_;
  // Formatting the date is the costly part; events arrive in bursts within
  // the same second, so the last second's text is kept.
  // Sized for any year an int64_t count of microseconds can reach (six
  // digits and a sign), which strftime's 20-byte "%Y" buffer could not hold.
  mutable int64_t cached_second_ = INT64_MIN;
  mutable char cached_text_[40] = {};
  mutable size_t cached_length_ = 0;
};

}  // namespace tcptrace
