#include "event_output.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "diagnostics.h"

namespace tcptrace {

EventOutput::EventOutput(int fd, std::vector<std::optional<EventDecoder>> decoders,
                         std::vector<std::string> table_names, std::optional<uint64_t> max_events)
    : fd_(fd), decoders_(std::move(decoders)), table_names_(std::move(table_names)), max_events_(max_events) {
  buffer_.reserve(kFlushThreshold * 2);
}

void EventOutput::on_event(size_t table_index, const void* data, size_t size) {
  if (limit_reached() || reader_gone_) return;
  const std::optional<EventDecoder>& decoder = decoders_.at(table_index);
  if (!decoder) return;
  if (!decoder->append_json(buffer_, data, size)) {
    ++truncated_;
    report("skipped a " + std::to_string(size) + "-byte sample from table '" + table_names_[table_index] +
           "': shorter than its " + std::to_string(decoder->layout().size) + "-byte event struct");
    return;
  }
  ++events_;
  if (buffer_.size() >= kFlushThreshold) flush();
}

void EventOutput::on_lost(size_t table_index, int cpu, uint64_t count) {
  lost_ += count;
  lost_by_cpu_[{table_index, cpu}] += count;
  report("lost " + std::to_string(count) + " events on CPU " + std::to_string(cpu) + " (table '" +
         table_names_.at(table_index) + "': the reader fell behind; a larger --buffer-pages helps)");
}

bool EventOutput::flush() {
  size_t done = 0;
  while (done < buffer_.size() && !reader_gone_) {
    ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      // EPIPE: `| head` has read enough. Any other error ends output too.
      if (errno != EPIPE) report(std::string("cannot write events: ") + strerror(errno));
      reader_gone_ = true;
      break;
    }
    done += static_cast<size_t>(n);
  }
  buffer_.clear();
  return !reader_gone_;
}

}  // namespace tcptrace
