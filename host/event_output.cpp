#include "event_output.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "diagnostics.h"

namespace tcptrace {

StdoutWriter::StdoutWriter(int fd, std::optional<uint64_t> max_events) : fd_(fd), max_events_(max_events) {
  buffer_.reserve(kFlushThreshold * 2);
}

void StdoutWriter::event_appended() {
  ++events_;
  if (buffer_.size() >= kFlushThreshold) flush();
}

void StdoutWriter::add_lost(int cpu, uint64_t count, const std::string& note) {
  lost_ += count;
  lost_by_cpu_[cpu] += count;
  lost_lines_.add("CPU " + std::to_string(cpu), count, note);
}

void StdoutWriter::add_truncated(const std::string& source) {
  ++truncated_;
  truncated_lines_.add(source, 1, ": never read past their end");
}

void StdoutWriter::add_skipped_runs(const std::string& probe, uint64_t count) {
  skipped_lines_.add(probe, count, ": recursion_misses, the program was already running on that CPU; their events are lost");
}

void StdoutWriter::tick_reports() {
  lost_lines_.tick();
  truncated_lines_.tick();
  skipped_lines_.tick();
}

void StdoutWriter::finish_reports() {
  lost_lines_.finish();
  truncated_lines_.finish();
  skipped_lines_.finish();
}

bool StdoutWriter::flush() {
  if (!reader_gone_ && !buffer_.empty()) {
    // EPIPE: `| head` has read enough. Any other error ends output too.
    if (const int err = write_all(fd_, buffer_); err != 0) {
      if (err != EPIPE) report(std::string("cannot write events: ") + std::strerror(err));
      reader_gone_ = true;
    }
  }
  buffer_.clear();
  return !reader_gone_;
}

bool StdoutWriter::reader_closed() {
  if (reader_gone_) return true;
  pollfd pfd{fd_, 0, 0};
  // With no events requested, poll still reports POLLERR (pipe without
  // reader) and POLLHUP (socket shut down); a terminal or file reports none.
  if (::poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLERR | POLLHUP)) != 0) reader_gone_ = true;
  return reader_gone_;
}

void RawRecorder::record(size_t table_index, const void* data, size_t size) {
  const uint32_t header[2] = {static_cast<uint32_t>(table_index), static_cast<uint32_t>(size)};
  buffer_.append(reinterpret_cast<const char*>(header), sizeof header);
  buffer_.append(static_cast<const char*>(data), size);
  if (buffer_.size() >= (1u << 20)) flush();
}

void RawRecorder::flush() {
  if (const int err = write_all(fd_, buffer_); err != 0 && !failed_) {
    report(std::string("--record-raw: cannot write: ") + std::strerror(err));
    failed_ = true;
  }
  buffer_.clear();
}

EventOutput::EventOutput(StdoutWriter& writer, std::vector<std::optional<EventDecoder>> decoders,
                         std::vector<std::string> table_names, RawRecorder* recorder, Metrics* metrics,
                         bool json)
    : writer_(writer),
      decoders_(std::move(decoders)),
      table_names_(std::move(table_names)),
      recorder_(recorder),
      metrics_(metrics),
      json_(json) {}

void EventOutput::on_event(size_t table_index, const void* data, size_t size) {
  if (!writer_.wants_events()) return;
  if (recorder_ != nullptr) recorder_->record(table_index, data, size);
  const std::optional<EventDecoder>& decoder = decoders_.at(table_index);
  if (!decoder) return;
  // A truncated sample must never be read past its end, by the decoder or
  // by the metrics.
  if (size < decoder->layout().size) {
    writer_.add_truncated("table '" + table_names_[table_index] + "', " + std::to_string(size) + " of " +
                          std::to_string(decoder->layout().size) + " bytes");
    if (metrics_ != nullptr) metrics_->add_truncated();
    return;
  }
  if (metrics_ != nullptr) metrics_->observe(table_index, data);
  if (json_ && table_index < text_.size() && text_[table_index]) {
    scratch_.clear();
    decoder->append_json(scratch_, data, size);
    if (text_header_table_ != table_index) {
      writer_.buffer() += text_[table_index]->header();
      text_header_table_ = table_index;
    }
    text_[table_index]->append_row(writer_.buffer(), scratch_);
  } else if (json_) {
    decoder->append_json(writer_.buffer(), data, size);
  }
  writer_.event_appended();
}

void EventOutput::on_lost(size_t table_index, int cpu, uint64_t count) {
  if (!kernel_lost_records_) return;
  writer_.add_lost(cpu, count, ": table '" + table_names_.at(table_index) +
                                   "', the reader fell behind; a larger --buffer-pages helps");
  if (metrics_ != nullptr) metrics_->add_lost_buffer(count);
}

}  // namespace tcptrace
