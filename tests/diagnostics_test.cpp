// What the host says on stderr during a run: loss counts at most once per
// interval with running totals, and a stderr nobody reads never blocks the
// caller.
#include "diagnostics.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <regex>
#include <string>

namespace tcptrace {
namespace {

using namespace std::chrono_literals;

size_t count_lines(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = 0; (at = text.find(needle, at)) != std::string::npos; at += needle.size()) ++n;
  return n;
}

TEST(ThrottledCount, OneLinePerIntervalWithRunningTotals) {
  double now = 100.0;
  ThrottledCount lost("lost {N} events", 1.0, [&] { return now; });
  ::testing::internal::CaptureStderr();
  lost.add("CPU 0", 5, ": full");  // the first count is reported at once
  now = 100.2;
  lost.add("CPU 1", 3, ": full");
  now = 100.5;
  lost.add("CPU 0", 2, ": full again");
  now = 100.9;
  lost.tick();
  now = 101.0;
  lost.tick();
  lost.tick();  // nothing new
  const std::string text = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(text,
            "tcptrace-bcc: lost 5 events (CPU 0: 5; 5 in all): full\n"
            "tcptrace-bcc: lost 5 events (CPU 0: 2, CPU 1: 3; 10 in all): full again\n");
  EXPECT_EQ(lost.total(), 10u);
}

TEST(ThrottledCount, AStormMakesAtMostOneLineASecondAndFinishReportsTheRest) {
  double now = 0;
  ThrottledCount lost("lost {N} events", 1.0, [&] { return now; });
  ::testing::internal::CaptureStderr();
  // 10 000 counts over 10 s, on 4 CPUs.
  for (int i = 0; i < 10000; ++i) {
    now = i * 0.001;
    lost.add("CPU " + std::to_string(i % 4), 1, ": full");
  }
  lost.finish();
  const std::string text = ::testing::internal::GetCapturedStderr();
  EXPECT_LE(count_lines(text, "tcptrace-bcc: lost "), 11u) << text;
  EXPECT_EQ(lost.lines(), count_lines(text, "tcptrace-bcc: lost "));
  // The lines add up to the total, and the last one says it.
  uint64_t sum = 0;
  const std::regex line("lost ([0-9]+) events \\(");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line); it != std::sregex_iterator(); ++it) {
    sum += std::stoull((*it)[1]);
  }
  EXPECT_EQ(sum, 10000u);
  EXPECT_NE(text.find("; 10000 in all): full\n"), std::string::npos) << text;
}

// stderr is a pipe that is full and that nobody reads: reports return at
// once while a NonBlockingReports lives; when it ends, the lines it could
// keep arrive, then the count of those it dropped.
TEST(NonBlockingReports, AFullUnreadStderrPipeNeverBlocks) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  const int saved = dup(STDERR_FILENO);
  ASSERT_GE(saved, 0);
  ASSERT_GE(dup2(fds[1], STDERR_FILENO), 0);
  // Fill the pipe.
  const int flags = fcntl(fds[1], F_GETFL);
  fcntl(fds[1], F_SETFL, flags | O_NONBLOCK);
  const std::string junk(4096, 'x');
  while (write(fds[1], junk.data(), junk.size()) > 0) {
  }
  fcntl(fds[1], F_SETFL, flags);

  auto guard = std::make_unique<NonBlockingReports>();
  auto reporting = std::async(std::launch::async, [] {
    for (int i = 0; i < 10000; ++i) report("line " + std::to_string(i));
  });
  const bool returned = reporting.wait_for(10s) == std::future_status::ready;
  // Read everything while the guard ends (its last write blocks until read).
  std::string text;
  auto reader = std::async(std::launch::async, [&] {
    char buf[65536];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  });
  if (!returned) {
    // Unblock the reporting thread so the test can end, failed.
    reporting.wait();
  }
  guard.reset();
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fds[1]);
  reader.wait();
  close(fds[0]);
  EXPECT_TRUE(returned) << "report() blocked on a full stderr";
  EXPECT_NE(text.find("tcptrace-bcc: line 0\n"), std::string::npos);
  const std::regex dropped("tcptrace-bcc: ([0-9]+) diagnostic lines dropped: stderr was not being read\n$");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(text, m, dropped)) << text.substr(text.size() > 300 ? text.size() - 300 : 0);
  EXPECT_EQ(count_lines(text, "tcptrace-bcc: line ") + std::stoull(m[1]), 10000u);
  EXPECT_LE(count_lines(text, "tcptrace-bcc: line ") * 20, NonBlockingReports::kPendingBytes + 20 * 20);
}

}  // namespace
}  // namespace tcptrace
