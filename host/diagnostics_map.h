// Points clang's diagnostics at the user's file and line.
//
// BCC compiles the program as "/virtual/main.c", and not quite the text the
// user wrote: before each TRACEPOINT_PROBE it inserts the struct describing
// the tracepoint's record (tp_frontend_action.cc), so every later line is
// reported further down (an error on line 4 shows up as main.c:18). clang
// prints the offending source line under each diagnostic; that line, looked
// up in the user's text at or above the reported line, gives the real one.
#pragma once

#include <string>
#include <string_view>

namespace tcptrace {

// Rewrites every "/virtual/main.c:LINE:COL:" in `diagnostics` to
// "PATH:REAL_LINE:COL:". A location whose line cannot be found in `source`
// (it lies in text BCC generated) keeps the shift of the nearest mapped
// diagnostic before it, or its reported line when there is none.
std::string map_diagnostics_to_source(std::string_view diagnostics, std::string_view source,
                                      const std::string& path);

}  // namespace tcptrace
