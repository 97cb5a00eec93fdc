// The only writer of stdout, and the sinks that decode events into it.
//
// StdoutWriter owns the output buffer and the run's counters; decoded lines
// are appended to one buffer and written after each poll batch (or when the
// buffer grows large), so `| jq` sees events within a poll interval without a
// write() per event. An EventOutput decodes one loaded program's tables into
// a StdoutWriter; with --watch, old and new versions of a program each have
// their own EventOutput over the same writer.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bcc_backend.h"
#include "diagnostics.h"
#include "event_decoder.h"
#include "metrics.h"
#include "text_output.h"

namespace tcptrace {

class StdoutWriter {
 public:
  StdoutWriter(int fd, std::optional<uint64_t> max_events);

  // False once --count is reached or the reader went away: drop the rest.
  bool wants_events() const { return !limit_reached() && !reader_gone_; }
  std::string& buffer() { return buffer_; }
  void event_appended();

  // Counts a loss and reports it through the lost-events line (at most one
  // a second, diagnostics.h); `note` says why it happened.
  void add_lost(int cpu, uint64_t count, const std::string& note);
  // A sample shorter than its struct, from `source` ("table 'events'").
  void add_truncated(const std::string& source);
  // Runs of `probe` the kernel skipped (recursion_misses), reported alike.
  void add_skipped_runs(const std::string& probe, uint64_t count);
  // Reports counts whose line has come due; finish_reports() the rest.
  void tick_reports();
  void finish_reports();

  // Writes the buffered lines. Returns false once the reader has gone away
  // (EPIPE): the run should end quietly.
  bool flush();
  // True when stdout is a pipe or socket whose reader has closed it, found
  // without writing (poll reports POLLERR/POLLHUP on a widowed pipe), so a
  // quiet run behind `| head` ends too.
  bool reader_closed();

  uint64_t events() const { return events_; }
  uint64_t lost() const { return lost_; }
  uint64_t truncated() const { return truncated_; }
  const std::map<int, uint64_t>& lost_by_cpu() const { return lost_by_cpu_; }
  bool limit_reached() const { return max_events_ && events_ >= *max_events_; }
  bool reader_gone() const { return reader_gone_; }

 private:
  static constexpr size_t kFlushThreshold = 256 * 1024;

  int fd_;
  std::optional<uint64_t> max_events_;
  std::string buffer_;
  uint64_t events_ = 0;
  uint64_t lost_ = 0;
  uint64_t truncated_ = 0;
  bool reader_gone_ = false;
  std::map<int, uint64_t> lost_by_cpu_;
  ThrottledCount lost_lines_{"lost {N} events"};
  ThrottledCount truncated_lines_{"skipped {N} samples shorter than their event struct"};
  ThrottledCount skipped_lines_{"kernel skipped {N} runs"};
};

// --record-raw FILE: every sample as it arrived, for offline decoding and
// the decode benchmark: per sample a little-endian u32 table index, a u32
// size, then the bytes.
class RawRecorder {
 public:
  explicit RawRecorder(int fd) : fd_(fd) {}
  void record(size_t table_index, const void* data, size_t size);
  void flush();

 private:
  int fd_;
  std::string buffer_;
  bool failed_ = false;  // reported once
};

class EventOutput final : public bcc::EventSink {
 public:
  // decoders[i] decodes table i; nullopt for a table the program never
  // submits a struct to (nothing to decode). Each event goes to `metrics`
  // when given, and becomes a JSON line unless `json` is false
  // (--output none: no formatting at all).
  EventOutput(StdoutWriter& writer, std::vector<std::optional<EventDecoder>> decoders,
              std::vector<std::string> table_names, RawRecorder* recorder = nullptr, Metrics* metrics = nullptr,
              bool json = true);

  void on_event(size_t table_index, const void* data, size_t size) override;
  void on_lost(size_t table_index, int cpu, uint64_t count) override;

  // For a program that counts every submit that failed (`tcptrace_lost`):
  // a perf buffer's own lost records count a subset of those same failures
  // (those that found the buffer full), so they are not added again.
  void ignore_kernel_lost_records() { kernel_lost_records_ = false; }

  // --output text: rows in columns instead of JSON lines, columns[i] for
  // table i (the header is printed before the first row of a table, and
  // again when the table changes).
  void use_text_columns(std::vector<std::optional<TextColumns>> columns) { text_ = std::move(columns); }

 private:
  StdoutWriter& writer_;
  std::vector<std::optional<EventDecoder>> decoders_;
  std::vector<std::string> table_names_;
  RawRecorder* recorder_;
  Metrics* metrics_;
  bool json_;
  bool kernel_lost_records_ = true;
  std::vector<std::optional<TextColumns>> text_;
  size_t text_header_table_ = SIZE_MAX;  // the table whose header was printed last
  std::string scratch_;
};

}  // namespace tcptrace
