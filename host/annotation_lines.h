// The one scanner for the host's comment annotations ("tcptrace:format",
// "tcptrace:attach", "tcptrace:buffers", "tcptrace:filters"): the words that
// follow a marker on every line that has it.
#pragma once

#include <string_view>

#include "result.h"

namespace tcptrace {

// A C identifier: what names a field, a table or a map in an annotation.
inline bool is_identifier(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0)) return false;
  }
  return true;
}

// Calls `on_word(word, line_number)` for each blank-separated word after
// `marker`. The marker must be followed by a blank ("tcptrace:attach-x" is
// not "tcptrace:attach"); a "*/" on the line ends the words (a one-line
// block comment). Stops at the first error `on_word` returns.
template <class OnWord>
Status for_each_annotation_word(std::string_view source, std::string_view marker, OnWord on_word) {
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
  size_t line_start = 0;
  size_t line_number = 1;
  while (line_start < source.size()) {
    size_t line_end = source.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = source.size();
    const std::string_view line = source.substr(line_start, line_end - line_start);
    if (const size_t at = line.find(marker); at != std::string_view::npos) {
      std::string_view rest = line.substr(at + marker.size());
      if (const size_t close = rest.find("*/"); close != std::string_view::npos) rest = rest.substr(0, close);
      if (rest.empty() || blank(rest[0])) {
        size_t i = 0;
        while (i < rest.size()) {
          while (i < rest.size() && blank(rest[i])) ++i;
          size_t j = i;
          while (j < rest.size() && !blank(rest[j])) ++j;
          if (j > i) {
            if (Status s = on_word(rest.substr(i, j - i), line_number); !s) return s;
          }
          i = j;
        }
      }
    }
    line_start = line_end + 1;
    ++line_number;
  }
  return {};
}

}  // namespace tcptrace
