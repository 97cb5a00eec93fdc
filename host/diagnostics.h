// Everything the host says that is not an event goes to stderr through here,
// one line per message, prefixed with the tool's name.
#pragma once

#include <string_view>

namespace tcptrace {

void report(std::string_view line);

// Writes all of `bytes` to `fd`, retrying short writes and EINTR. Returns 0,
// or the errno of the write that failed.
int write_all(int fd, std::string_view bytes);

}  // namespace tcptrace
