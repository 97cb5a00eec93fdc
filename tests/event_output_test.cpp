#include "event_output.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>

namespace tcptrace {
namespace {

class Pipe {
 public:
  Pipe() { EXPECT_EQ(pipe(fds_), 0); }
  ~Pipe() {
    close_read();
    if (fds_[1] >= 0) close(fds_[1]);
  }
  int read_end() const { return fds_[0]; }
  int write_end() const { return fds_[1]; }
  void close_read() {
    if (fds_[0] >= 0) close(fds_[0]);
    fds_[0] = -1;
  }
  std::string drain() {
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = read(fds_[0], buf, sizeof buf)) > 0) {
      text.append(buf, static_cast<size_t>(n));
      if (static_cast<size_t>(n) < sizeof buf) break;
    }
    return text;
  }

 private:
  int fds_[2] = {-1, -1};
};

EventDecoder pid_decoder(const WallClock& clock) {
  auto layout = parse_event_layout({"pid#u32", "fd#s32"});
  DecoderOptions options;
  options.add_time = false;
  auto decoder = EventDecoder::make(std::move(layout).value(), {}, "events", options, clock);
  return std::move(decoder).value();
}

TEST(EventOutput, TruncatedSampleIsCountedAndSkipped) {
  const WallClock clock(0);
  Pipe out;
  StdoutWriter writer(out.write_end(), std::nullopt);
  std::vector<std::optional<EventDecoder>> decoders;
  decoders.emplace_back(pid_decoder(clock));
  EventOutput sink(writer, std::move(decoders), {"events"});
  const uint32_t sample[2] = {42, 7};
  sink.on_event(0, sample, 4);  // half of the 8-byte struct
  EXPECT_EQ(writer.truncated(), 1u);
  EXPECT_EQ(writer.events(), 0u);
  EXPECT_TRUE(writer.buffer().empty()) << "nothing read past the sample's end";
  sink.on_event(0, sample, sizeof sample);
  ASSERT_TRUE(writer.flush());
  EXPECT_EQ(out.drain(), "{\"pid\":42,\"fd\":7}\n");
  EXPECT_EQ(writer.events(), 1u);
}

TEST(EventOutput, CountLimitStopsDecoding) {
  const WallClock clock(0);
  Pipe out;
  StdoutWriter writer(out.write_end(), 2);
  std::vector<std::optional<EventDecoder>> decoders;
  decoders.emplace_back(pid_decoder(clock));
  EventOutput sink(writer, std::move(decoders), {"events"});
  const uint32_t sample[2] = {1, 2};
  for (int i = 0; i < 5; ++i) sink.on_event(0, sample, sizeof sample);
  EXPECT_EQ(writer.events(), 2u);
  EXPECT_TRUE(writer.limit_reached());
  EXPECT_FALSE(writer.wants_events());
  ASSERT_TRUE(writer.flush());
  EXPECT_EQ(out.drain(), "{\"pid\":1,\"fd\":2}\n{\"pid\":1,\"fd\":2}\n");
}

TEST(EventOutput, LostEventsAreCountedPerCpu) {
  const WallClock clock(0);
  Pipe out;
  StdoutWriter writer(out.write_end(), std::nullopt);
  EventOutput sink(writer, {std::nullopt}, {"events"});
  sink.on_lost(0, 1, 5);
  sink.on_lost(0, 0, 2);
  sink.on_lost(0, 1, 3);
  EXPECT_EQ(writer.lost(), 10u);
  EXPECT_EQ(writer.lost_by_cpu(), (std::map<int, uint64_t>{{0, 2}, {1, 8}}));
}

TEST(StdoutWriter, ClosedReaderEndsOutputQuietly) {
  struct sigaction ignore {};
  struct sigaction previous {};
  ignore.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &ignore, &previous);
  Pipe out;
  StdoutWriter writer(out.write_end(), std::nullopt);
  EXPECT_FALSE(writer.reader_closed());
  out.close_read();
  EXPECT_TRUE(writer.reader_closed()) << "poll() sees the widowed pipe without writing";
  writer.buffer() = "{}\n";
  EXPECT_FALSE(writer.flush());
  EXPECT_TRUE(writer.reader_gone());
  EXPECT_FALSE(writer.wants_events());
  sigaction(SIGPIPE, &previous, nullptr);
}

}  // namespace
}  // namespace tcptrace
