#include "program_annotations.h"

#include <algorithm>

namespace tcptrace {
namespace {

// Calls `on_word(word, line_number)` for each word after `marker` on every
// line that has it.
template <class OnWord>
Status for_each_word_after(std::string_view source, std::string_view marker, OnWord on_word) {
  size_t line_start = 0;
  size_t line_number = 1;
  while (line_start < source.size()) {
    size_t line_end = source.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = source.size();
    std::string_view line = source.substr(line_start, line_end - line_start);
    if (const size_t at = line.find(marker); at != std::string_view::npos) {
      std::string_view rest = line.substr(at + marker.size());
      // A one-line block comment ends the list: /* tcptrace:... */
      if (const size_t close = rest.find("*/"); close != std::string_view::npos) rest = rest.substr(0, close);
      // The marker must be followed by a blank ("tcptrace:attach-x" is not it).
      if (rest.empty() || rest[0] == ' ' || rest[0] == '\t') {
        size_t i = 0;
        while (i < rest.size()) {
          while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\t' || rest[i] == '\r')) ++i;
          size_t j = i;
          while (j < rest.size() && rest[j] != ' ' && rest[j] != '\t' && rest[j] != '\r') ++j;
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

}  // namespace

bool ProgramAnnotations::honours(std::string_view filter) const {
  return std::find(filters.begin(), filters.end(), filter) != filters.end();
}

const std::vector<std::string>& known_filter_names() {
  static const std::vector<std::string> names = {"sport", "dport", "family", "pid", "min-us", "no-failures"};
  return names;
}

Result<ProgramAnnotations> parse_program_annotations(std::string_view source) {
  ProgramAnnotations annotations;
  Status attach = for_each_word_after(source, "tcptrace:attach", [&](std::string_view word, size_t line) -> Status {
    auto method = method_from_name(word);
    if (!method) {
      return runtime_error("line " + std::to_string(line) + ": unknown attach method '" + std::string(word) +
                           "' (known: kfunc, kprobe, tracepoint)");
    }
    if (std::find(annotations.attach_methods.begin(), annotations.attach_methods.end(), *method) ==
        annotations.attach_methods.end()) {
      annotations.attach_methods.push_back(*method);
    }
    return {};
  });
  if (!attach) return std::move(attach).take_error();
  Status buffers = for_each_word_after(source, "tcptrace:buffers", [&](std::string_view word, size_t line) -> Status {
    if (word == "ringbuf") {
      annotations.ring_buffer_capable = true;
    } else if (word != "perf") {
      return runtime_error("line " + std::to_string(line) + ": unknown buffer kind '" + std::string(word) +
                           "' (known: ringbuf, perf)");
    }
    return {};
  });
  if (!buffers) return std::move(buffers).take_error();
  Status filters = for_each_word_after(source, "tcptrace:filters", [&](std::string_view word, size_t line) -> Status {
    const auto& known = known_filter_names();
    if (std::find(known.begin(), known.end(), word) == known.end()) {
      return runtime_error("line " + std::to_string(line) + ": unknown filter '" + std::string(word) + "'");
    }
    annotations.filters.emplace_back(word);
    return {};
  });
  if (!filters) return std::move(filters).take_error();
  return annotations;
}

}  // namespace tcptrace
