// Points clang's diagnostics and the verifier's log at the user's file and
// line.
//
// BCC compiles the program as "/virtual/main.c", and not quite the text the
// user wrote: before each TRACEPOINT_PROBE it inserts the struct describing
// the tracepoint's record (tp_frontend_action.cc), so every later line is
// reported further down (an error on line 4 shows up as main.c:18). The
// lines BCC inserts predict the real line; the source line clang prints under
// each diagnostic confirms it, or finds it when the prediction is off.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tcptrace {

// `count` lines that BCC's rewriter inserts into the text it compiles right
// before line `before_line` (1-based) of the user's text.
struct InsertedLines {
  size_t before_line = 0;
  size_t count = 0;
};

// A line of the user's text that starts, after blanks, with
// "TRACEPOINT_PROBE(category, event)": BCC inserts the tracepoint's struct
// right before it. (A probe written without the macro, as a function taking
// a `struct tracepoint__CATEGORY__EVENT *`, is not found here.)
struct TracepointProbeLine {
  size_t line = 0;
  std::string category;
  std::string event;
};

std::vector<TracepointProbeLine> tracepoint_probe_lines(std::string_view source);

// How clang 14 prints a source line under a diagnostic (TextDiagnostic.cpp,
// printableTextForNextCharacter): each tab becomes spaces up to the next
// multiple of 8 bytes since the previous tab or the line's start, a control
// character (C0, DEL, C1) becomes <U+XXXX>, a byte that starts no
// well-formed UTF-8 sequence becomes <XX>; everything else is copied. (clang
// also escapes rarer code points, such as unassigned ones; a line holding
// one is found by the prediction alone.)
std::string clang_snippet(std::string_view source_line);

// Rewrites every "/virtual/main.c:LINE:COL:" in `diagnostics` to
// "PATH:REAL_LINE:COL:" (the column counts bytes, as in the user's file).
// `inserted`, ordered by line, predicts the real line; a diagnostic whose
// echoed source line is on other lines takes the nearest of them to the
// prediction, and the difference between the two carries over to later
// diagnostics (a probe the scan missed shifts every line below it).
std::string map_diagnostics_to_source(std::string_view diagnostics, std::string_view source,
                                      const std::string& path, const std::vector<InsertedLines>& inserted);

// What BCC prints when the kernel refuses a program: "bpf: Failed to load
// program", the verifier's log, hints. The log names the source line of the
// instructions it walks as "; TEXT @ main.c:N" (Linux 6.x; older kernels
// print "; TEXT"), TEXT without its leading blanks, from the text BCC
// compiled last, and N counting lines of that text.
struct MappedVerifierLog {
  // The log with " @ PATH:LINE" after each source line found in the user's
  // text and no location after the others (BCC rewrote them: map lookups
  // and the like).
  std::string text;
  // The line of the last source line in the log, where the verifier
  // stopped, when it was found.
  std::optional<size_t> failure_line;
};

MappedVerifierLog map_verifier_log_to_source(std::string_view log, std::string_view source, const std::string& path);

}  // namespace tcptrace
