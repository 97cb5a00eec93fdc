#include "diagnostics.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <string>

namespace tcptrace {
namespace {

// How report() writes while a NonBlockingReports is alive.
struct NonBlockingState {
  bool on = false;
  int pipe_fd = -1;     // stderr's pipe, opened again with O_NONBLOCK
  bool socket = false;  // stderr is a socket: send() with MSG_DONTWAIT
  std::string pending;
  uint64_t dropped = 0;
};

std::mutex g_mutex;
NonBlockingState g_state;

// Writes what stderr takes now, without waiting. A pipe gets a description
// of its own with O_NONBLOCK (setting it on fd 2 would change the
// description the parent shares); a file or terminal is written when poll()
// says it takes data, at most PIPE_BUF at a time.
void drain_pending_locked() {
  NonBlockingState& s = g_state;
  while (!s.pending.empty()) {
    ssize_t n;
    if (s.pipe_fd >= 0) {
      n = ::write(s.pipe_fd, s.pending.data(), s.pending.size());
    } else if (s.socket) {
      n = ::send(STDERR_FILENO, s.pending.data(), s.pending.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    } else {
      pollfd pfd{STDERR_FILENO, POLLOUT, 0};
      if (::poll(&pfd, 1, 0) != 1 || (pfd.revents & POLLOUT) == 0) return;
      n = ::write(STDERR_FILENO, s.pending.data(), std::min<size_t>(s.pending.size(), PIPE_BUF));
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      s.pending.clear();  // stderr is gone: nothing will take these
      return;
    }
    s.pending.erase(0, static_cast<size_t>(n));
  }
}

double steady_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

void report(std::string_view line) {
  std::string text = "tcptrace-bcc: ";
  text.append(line);
  text.push_back('\n');
  std::lock_guard lock(g_mutex);
  if (!g_state.on) {
    // One write() per line so lines from concurrent writers never interleave.
    write_all(STDERR_FILENO, text);
    return;
  }
  if (g_state.pending.size() + text.size() > NonBlockingReports::kPendingBytes) {
    ++g_state.dropped;
  } else {
    g_state.pending += text;
  }
  drain_pending_locked();
}

int write_all(int fd, std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;
    done += static_cast<size_t>(n);
  }
  return 0;
}

NonBlockingReports::NonBlockingReports() {
  std::lock_guard lock(g_mutex);
  g_state = NonBlockingState{};
  g_state.on = true;
  struct stat st {};
  if (::fstat(STDERR_FILENO, &st) != 0) return;
  if (S_ISFIFO(st.st_mode)) {
    g_state.pipe_fd = ::open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  } else if (S_ISSOCK(st.st_mode)) {
    g_state.socket = true;
  }
}

NonBlockingReports::~NonBlockingReports() {
  std::lock_guard lock(g_mutex);
  g_state.on = false;
  write_all(STDERR_FILENO, g_state.pending);
  if (g_state.dropped > 0) {
    write_all(STDERR_FILENO, "tcptrace-bcc: " + std::to_string(g_state.dropped) +
                                 " diagnostic lines dropped: stderr was not being read\n");
  }
  if (g_state.pipe_fd >= 0) ::close(g_state.pipe_fd);
  g_state = NonBlockingState{};
}

ThrottledCount::ThrottledCount(std::string what, double interval_seconds, std::function<double()> clock)
    : what_(std::move(what)),
      interval_(interval_seconds),
      clock_(clock ? std::move(clock) : std::function<double()>(steady_seconds)) {}

void ThrottledCount::add(const std::string& source, uint64_t count, const std::string& note) {
  if (count == 0) return;
  pending_[source] += count;
  pending_total_ += count;
  total_ += count;
  note_ = note;
  tick();
}

void ThrottledCount::tick() {
  if (pending_total_ == 0) return;
  const double now = clock_();
  if (reported_ && now - last_line_ < interval_) return;
  last_line_ = now;
  reported_ = true;
  report_pending();
}

void ThrottledCount::finish() {
  if (pending_total_ > 0) report_pending();
}

void ThrottledCount::report_pending() {
  std::string sources;
  for (const auto& [source, count] : pending_) {
    sources += (sources.empty() ? "" : ", ") + source + ": " + std::to_string(count);
  }
  std::string what = what_;
  if (const size_t n = what.find("{N}"); n != std::string::npos) what.replace(n, 3, std::to_string(pending_total_));
  report(what + " (" + sources + "; " + std::to_string(total_) + " in all)" + note_);
  ++lines_;
  pending_.clear();
  pending_total_ = 0;
}

}  // namespace tcptrace
