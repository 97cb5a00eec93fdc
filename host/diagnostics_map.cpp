#include "diagnostics_map.h"

#include <charconv>
#include <vector>

namespace tcptrace {
namespace {

constexpr std::string_view kVirtualMain = "/virtual/main.c:";

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    start = end + 1;
  }
  return lines;
}

// Parses "LINE:" at the start of `text`; returns the line and the length read.
bool parse_line_number(std::string_view text, size_t& line, size_t& consumed) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), line);
  if (ec != std::errc() || ptr == text.data() || ptr == text.data() + text.size() || *ptr != ':') return false;
  consumed = static_cast<size_t>(ptr - text.data());
  return true;
}

}  // namespace

std::string map_diagnostics_to_source(std::string_view diagnostics, std::string_view source,
                                      const std::string& path) {
  const std::vector<std::string_view> source_lines = split_lines(source);
  const std::vector<std::string_view> lines = split_lines(diagnostics);
  std::string out;
  bool have_shift = false;
  size_t shift = 0;  // reported line minus real line, never negative
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    const size_t at = line.find(kVirtualMain);
    size_t reported = 0;
    size_t digits = 0;
    if (at == std::string_view::npos ||
        !parse_line_number(line.substr(at + kVirtualMain.size()), reported, digits)) {
      out.append(line);
      out.push_back('\n');
      continue;
    }
    size_t real = 0;
    // The snippet clang echoes is the next line, unless the next line is
    // another diagnostic.
    const bool has_snippet = i + 1 < lines.size() && lines[i + 1].find(kVirtualMain) == std::string_view::npos &&
                             lines[i + 1].find(": note: ") == std::string_view::npos;
    if (has_snippet && reported >= 1) {
      const std::string_view snippet = lines[i + 1];
      // Candidates at or above the reported line; the one whose shift is
      // closest to the last known shift wins (shifts only grow downwards).
      size_t best = 0;
      size_t best_distance = SIZE_MAX;
      const size_t top = std::min(reported, source_lines.size());
      for (size_t candidate = top; candidate >= 1; --candidate) {
        if (source_lines[candidate - 1] != snippet) continue;
        const size_t candidate_shift = reported - candidate;
        const size_t distance = have_shift ? (candidate_shift > shift ? candidate_shift - shift
                                                                      : shift - candidate_shift)
                                           : candidate_shift;
        if (distance < best_distance) {
          best = candidate;
          best_distance = distance;
        }
      }
      if (best != 0) {
        real = best;
        shift = reported - best;
        have_shift = true;
      }
    }
    if (real == 0) real = have_shift && reported > shift ? reported - shift : reported;
    out.append(line.substr(0, at));
    out.append(path);
    out.push_back(':');
    out.append(std::to_string(real));
    out.append(line.substr(at + kVirtualMain.size() + digits));
    out.push_back('\n');
  }
  return out;
}

}  // namespace tcptrace
