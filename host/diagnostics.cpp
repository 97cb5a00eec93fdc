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
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(STDERR_FILENO, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

}  // namespace tcptrace
