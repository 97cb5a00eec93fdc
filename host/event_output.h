// The only writer of stdout: decoded events are appended to one buffer and
// written after each poll batch (or when the buffer grows large), so `| jq`
// sees events within a poll interval without a write() per event.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bcc_backend.h"
#include "event_decoder.h"

namespace tcptrace {

class EventOutput final : public bcc::EventSink {
 public:
  // decoders[i] decodes table i; nullopt for a table the program never
  // submits a struct to (nothing to decode, its samples are counted only).
  EventOutput(int fd, std::vector<std::optional<EventDecoder>> decoders, std::vector<std::string> table_names,
              std::optional<uint64_t> max_events);

  void on_event(size_t table_index, const void* data, size_t size) override;
  void on_lost(size_t table_index, int cpu, uint64_t count) override;

  // Writes the buffered lines. Returns false once the reader has gone away
  // (EPIPE): the run should end quietly.
  bool flush();

  uint64_t events() const { return events_; }
  uint64_t lost() const { return lost_; }
  uint64_t truncated() const { return truncated_; }
  bool limit_reached() const { return max_events_ && events_ >= *max_events_; }
  bool reader_gone() const { return reader_gone_; }
  // Lost counts per (table, cpu), for the summary.
  const std::map<std::pair<size_t, int>, uint64_t>& lost_by_cpu() const { return lost_by_cpu_; }

 private:
  static constexpr size_t kFlushThreshold = 256 * 1024;

  int fd_;
  std::vector<std::optional<EventDecoder>> decoders_;
  std::vector<std::string> table_names_;
  std::optional<uint64_t> max_events_;
  std::string buffer_;
  uint64_t events_ = 0;
  uint64_t lost_ = 0;
  uint64_t truncated_ = 0;
  bool reader_gone_ = false;
  std::map<std::pair<size_t, int>, uint64_t> lost_by_cpu_;
};

}  // namespace tcptrace
