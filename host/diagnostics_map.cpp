#include "diagnostics_map.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>

#include "annotation_lines.h"
#include "utf8.h"

namespace tcptrace {
namespace {

constexpr std::string_view kVirtualMain = "/virtual/main.c:";
// clang's default -ftabstop; BCC passes no other.
constexpr size_t kClangTabStop = 8;

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

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view trim_blanks(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// Parses "LINE:" at the start of `text`; returns the line and the length read.
bool parse_line_number(std::string_view text, size_t& line, size_t& consumed) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), line);
  if (ec != std::errc() || ptr == text.data() || ptr == text.data() + text.size() || *ptr != ':') return false;
  consumed = static_cast<size_t>(ptr - text.data());
  return true;
}

// The line of the user's text whose `keys` entry is `text`, among lines
// 1..last, nearest to `target`; of two as near, the one further down. 0
// when no line has that text.
size_t nearest_line_with(const std::vector<std::string>& keys, std::string_view text, size_t last, long target) {
  size_t best = 0;
  long best_distance = 0;
  for (size_t line = std::min(last, keys.size()); line >= 1; --line) {
    if (keys[line - 1] != text) continue;
    const long distance = std::labs(static_cast<long>(line) - target);
    if (best == 0 || distance < best_distance) {
      best = line;
      best_distance = distance;
    }
  }
  return best;
}

// The user's line that `reported` (a line of the text BCC compiled) comes
// from, given what BCC inserted; a line inside an inserted struct belongs to
// the probe it was inserted for.
size_t predicted_line(size_t reported, const std::vector<InsertedLines>& inserted) {
  size_t inserted_above = 0;
  for (const InsertedLines& insertion : inserted) {
    const size_t start = insertion.before_line + inserted_above;
    if (reported < start) break;
    if (reported < start + insertion.count) return insertion.before_line;
    inserted_above += insertion.count;
  }
  return reported - inserted_above;
}

void append_hex(std::string& out, unsigned value, int digits) {
  constexpr char kHex[] = "0123456789ABCDEF";
  for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4) out.push_back(kHex[(value >> shift) & 0xF]);
}

}  // namespace

std::vector<TracepointProbeLine> tracepoint_probe_lines(std::string_view source) {
  constexpr std::string_view kMacro = "TRACEPOINT_PROBE";
  std::vector<TracepointProbeLine> probes;
  const std::vector<std::string_view> lines = split_lines(source);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string_view rest = lines[i];
    auto skip_blanks = [&] {
      while (!rest.empty() && is_blank(rest.front())) rest.remove_prefix(1);
    };
    auto take = [&](char c) {
      skip_blanks();
      if (rest.empty() || rest.front() != c) return false;
      rest.remove_prefix(1);
      return true;
    };
    auto take_identifier = [&](std::string& out) {
      skip_blanks();
      size_t n = 0;
      while (n < rest.size() && (std::isalnum(static_cast<unsigned char>(rest[n])) || rest[n] == '_')) ++n;
      out.assign(rest.substr(0, n));
      rest.remove_prefix(n);
      return is_identifier(out);
    };
    skip_blanks();
    if (rest.substr(0, kMacro.size()) != kMacro) continue;
    rest.remove_prefix(kMacro.size());
    TracepointProbeLine probe;
    probe.line = i + 1;
    if (take('(') && take_identifier(probe.category) && take(',') && take_identifier(probe.event) && take(')')) {
      probes.push_back(std::move(probe));
    }
  }
  return probes;
}

std::string clang_snippet(std::string_view source_line) {
  std::string out;
  size_t since_tab = 0;  // bytes since the previous tab or the line's start
  size_t i = 0;
  while (i < source_line.size()) {
    const unsigned char c = static_cast<unsigned char>(source_line[i]);
    if (c == '\t') {
      out.append(kClangTabStop - since_tab % kClangTabStop, ' ');
      since_tab = 0;
      ++i;
      continue;
    }
    const size_t n = utf8_sequence_length(source_line, i);
    if (n == 0) {
      out += "<";
      append_hex(out, c, 2);
      out += ">";
      ++since_tab;
      ++i;
      continue;
    }
    // Control characters are all below U+00A0: one or two bytes.
    unsigned code_point = c;
    if (n == 2) code_point = (c & 0x1Fu) << 6 | (static_cast<unsigned char>(source_line[i + 1]) & 0x3Fu);
    if (n <= 2 && (code_point < 0x20 || (code_point >= 0x7F && code_point <= 0x9F))) {
      out += "<U+";
      append_hex(out, code_point, 4);
      out += ">";
    } else {
      out.append(source_line.substr(i, n));
    }
    since_tab += n;
    i += n;
  }
  return out;
}

std::string map_diagnostics_to_source(std::string_view diagnostics, std::string_view source,
                                      const std::string& path, const std::vector<InsertedLines>& inserted) {
  std::vector<std::string> snippets;
  for (std::string_view line : split_lines(source)) snippets.push_back(clang_snippet(line));
  const std::vector<std::string_view> lines = split_lines(diagnostics);
  std::string out;
  long correction = 0;  // real line minus predicted line, from the last diagnostic found by its text
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
    const size_t predicted = predicted_line(reported, inserted);
    const long target = std::max(1L, static_cast<long>(predicted) + correction);
    size_t real = 0;
    // The snippet clang echoes is the next line, unless the next line is
    // another diagnostic. BCC only inserts lines, so the real line is at or
    // above the reported one.
    const bool has_snippet = i + 1 < lines.size() && lines[i + 1].find(kVirtualMain) == std::string_view::npos &&
                             lines[i + 1].find(": note: ") == std::string_view::npos;
    if (has_snippet) real = nearest_line_with(snippets, lines[i + 1], reported, target);
    if (real != 0) {
      correction = static_cast<long>(real) - static_cast<long>(predicted);
    } else {
      real = static_cast<size_t>(target);
    }
    out.append(line.substr(0, at));
    out.append(path);
    out.push_back(':');
    out.append(std::to_string(real));
    out.append(line.substr(at + kVirtualMain.size() + digits));
    out.push_back('\n');
  }
  return out;
}

MappedVerifierLog map_verifier_log_to_source(std::string_view log, std::string_view source, const std::string& path) {
  std::vector<std::string> trimmed;
  for (std::string_view line : split_lines(source)) trimmed.emplace_back(trim_blanks(line));
  MappedVerifierLog mapped;
  // The reported line minus the real one, from the last annotation found
  // that had a line number: BCC's rewriting inserts lines too, so it grows
  // down the file.
  std::optional<long> shift;
  size_t last_found = 0;
  for (std::string_view line : split_lines(log)) {
    if (line.substr(0, 2) != "; ") {
      mapped.text.append(line);
      mapped.text.push_back('\n');
      continue;
    }
    std::string_view text = line.substr(2);
    std::optional<size_t> reported;
    if (const size_t at = text.rfind(" @ "); at != std::string_view::npos) {
      const std::string_view location = text.substr(at + 3);
      const size_t colon = location.rfind(':');
      size_t number = 0;
      if (colon != std::string_view::npos) {
        const std::string_view digits = location.substr(colon + 1);
        auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
        if (ec == std::errc() && ptr == digits.data() + digits.size() && !digits.empty()) {
          reported = number;
          text = text.substr(0, at);
        }
      }
    }
    size_t found = 0;
    const std::string_view key = trim_blanks(text);
    if (!key.empty()) {
      if (reported && shift) {
        found = nearest_line_with(trimmed, key, trimmed.size(), static_cast<long>(*reported) - *shift);
      } else if (last_found != 0) {
        // Without line numbers: the verifier walks a function downwards, so
        // the first such line from the previous one on.
        for (size_t line = last_found; line <= trimmed.size() && found == 0; ++line) {
          if (trimmed[line - 1] == key) found = line;
        }
        if (found == 0) found = nearest_line_with(trimmed, key, trimmed.size(), static_cast<long>(last_found));
      } else {
        found = nearest_line_with(trimmed, key, trimmed.size(), reported ? static_cast<long>(*reported) : 1);
      }
    }
    mapped.text += "; ";
    mapped.text.append(text);
    if (found != 0) {
      mapped.text += " @ " + path + ":" + std::to_string(found);
      last_found = found;
      if (reported) shift = static_cast<long>(*reported) - static_cast<long>(found);
      mapped.failure_line = found;
    } else {
      mapped.failure_line.reset();
    }
    mapped.text.push_back('\n');
  }
  return mapped;
}

}  // namespace tcptrace
