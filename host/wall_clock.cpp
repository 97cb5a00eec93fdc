#include "wall_clock.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace tcptrace {
namespace {

int64_t now_ns(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

WallClock::WallClock() : offset_ns_(now_ns(CLOCK_REALTIME) - now_ns(CLOCK_MONOTONIC)) {}

void WallClock::append_rfc3339_from_monotonic_us(std::string& out, uint64_t monotonic_us) const {
  char text[kMaxRfc3339Chars];
  out.append(text, write_rfc3339_from_monotonic_us(text, monotonic_us));
}

void WallClock::append_rfc3339_now(std::string& out) const {
  char text[kMaxRfc3339Chars];
  out.append(text, write_rfc3339_now(text));
}

void WallClock::append_rfc3339_realtime_us(std::string& out, int64_t realtime_us) const {
  char text[kMaxRfc3339Chars];
  out.append(text, write_rfc3339_realtime_us(text, realtime_us));
}

char* WallClock::write_rfc3339_from_monotonic_us(char* p, uint64_t monotonic_us) const {
  // Unsigned arithmetic: a garbage ts_us must wrap, not overflow (UB).
  return write_rfc3339_realtime_us(p, static_cast<int64_t>(monotonic_us + static_cast<uint64_t>(offset_ns_ / 1000)));
}

char* WallClock::write_rfc3339_now(char* p) const {
  return write_rfc3339_realtime_us(p, now_ns(CLOCK_REALTIME) / 1000);
}

char* WallClock::write_rfc3339_realtime_us(char* p, int64_t realtime_us) const {
  int64_t seconds = realtime_us / 1000000;
  int64_t micros = realtime_us % 1000000;
  if (micros < 0) {
    micros += 1000000;
    seconds -= 1;
  }
  if (seconds != cached_second_) {
    const time_t t = static_cast<time_t>(seconds);
    tm parts{};
    gmtime_r(&t, &parts);
    // Not strftime("%Y") into a fixed 19 characters: glibc prints years below
    // 1000 unpadded and years above 9999 do not fit. A garbage ts_us must still
    // yield valid JSON, so the year takes four digits, or more when needed.
    const int n = std::snprintf(cached_text_, sizeof cached_text_, "%04lld-%02d-%02dT%02d:%02d:%02d",
                                static_cast<long long>(parts.tm_year) + 1900, parts.tm_mon + 1, parts.tm_mday,
                                parts.tm_hour, parts.tm_min, parts.tm_sec);
    cached_length_ = n > 0 ? std::min(static_cast<size_t>(n), sizeof cached_text_ - 1) : 0;
    cached_second_ = seconds;
  }
  *p++ = '"';
  std::memcpy(p, cached_text_, cached_length_);
  p += cached_length_;
  *p++ = '.';
  for (int i = 5; i >= 0; --i) {
    p[i] = static_cast<char>('0' + micros % 10);
    micros /= 10;
  }
  p += 6;
  *p++ = 'Z';
  *p++ = '"';
  return p;
}

}  // namespace tcptrace
