// Everything the host says that is not an event goes to stderr through here,
// one line per message, prefixed with the tool's name.
#pragma once

#include <string_view>

namespace tcptrace {

void report(std::string_view line);

}  // namespace tcptrace
