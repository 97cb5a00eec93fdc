// Everything the host says that is not an event goes to stderr through here,
// one line per message, prefixed with the tool's name.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

namespace tcptrace {

void report(std::string_view line);

// Writes all of `bytes` to `fd`, retrying short writes and EINTR. Returns 0,
// or the errno of the write that failed.
int write_all(int fd, std::string_view bytes);

// While one is alive (the event loop), report() never blocks: a line stderr
// cannot take at once waits in a buffer of kPendingBytes, and lines beyond
// that are dropped and counted. A loop blocked on a stderr nobody reads
// would stop draining the event buffers, and lose more events. When it ends,
// what waits is written (blocking), then how many lines were dropped.
class NonBlockingReports {
 public:
  static constexpr size_t kPendingBytes = 64 * 1024;
  NonBlockingReports();
  ~NonBlockingReports();
  NonBlockingReports(const NonBlockingReports&) = delete;
  NonBlockingReports& operator=(const NonBlockingReports&) = delete;
};

// One kind of count reported as it grows (lost events, skipped runs): at
// most one line per interval, with what grew since the last line by source
// ("CPU 0") and the running total, so a storm makes a few lines, not one per
// occurrence. A line is due when a count arrives or tick() runs an interval
// after the last line; finish() reports the rest, so the lines add up to the
// total.
class ThrottledCount {
 public:
  // Lines read "<what> (<source>: n, ...; T in all)<note>", with N in
  // `what` ("lost {N} events") replaced by the count since the last line.
  explicit ThrottledCount(std::string what, double interval_seconds = 1.0, std::function<double()> clock = {});
  // `note` explains the count; the latest one goes into the next line.
  void add(const std::string& source, uint64_t count, const std::string& note);
  void tick();
  void finish();
  uint64_t total() const { return total_; }
  uint64_t lines() const { return lines_; }

 private:
  void report_pending();

  std::string what_;
  double interval_;
  std::function<double()> clock_;
  double last_line_ = 0;
  bool reported_ = false;  // any line yet
  std::map<std::string, uint64_t> pending_;
  uint64_t pending_total_ = 0;
  uint64_t total_ = 0;
  uint64_t lines_ = 0;
  std::string note_;
};

}  // namespace tcptrace
