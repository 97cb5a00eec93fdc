#include "diagnostics.h"

#include <unistd.h>

#include <cerrno>
#include <string>

namespace tcptrace {

void report(std::string_view line) {
  std::string text = "tcptrace-bcc: ";
  text.append(line);
  text.push_back('\n');
  // One write() per line so lines from concurrent writers never interleave.
  write_all(STDERR_FILENO, text);
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

}  // namespace tcptrace
