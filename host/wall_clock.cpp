#include "wall_clock.h"

#include <algorithm>
#include <cstdio>
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
  // Unsigned arithmetic: a garbage ts_us must wrap, not overflow (UB).
  append_rfc3339_realtime_us(out, static_cast<int64_t>(monotonic_us + static_cast<uint64_t>(offset_ns_ / 1000)));
}

void WallClock::append_rfc3339_now(std::string& out) const {
  append_rfc3339_realtime_us(out, now_ns(CLOCK_REALTIME) / 1000);
}

void WallClock::append_rfc3339_realtime_us(std::string& out, int64_t realtime_us) const {
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
  char text[sizeof cached_text_ + 12];
  size_t n = 0;
  text[n++] = '"';
  for (size_t i = 0; i < cached_length_; ++i) text[n++] = cached_text_[i];
  text[n++] = '.';
  for (int64_t div = 100000; div > 0; div /= 10) text[n++] = static_cast<char>('0' + (micros / div) % 10);
  text[n++] = 'Z';
  text[n++] = '"';
  out.append(text, n);
}

}  // namespace tcptrace
