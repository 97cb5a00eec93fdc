#include "program_annotations.h"

#include <algorithm>

#include "annotation_lines.h"

namespace tcptrace {

bool ProgramAnnotations::honours(std::string_view filter) const {
  return std::find(filters.begin(), filters.end(), filter) != filters.end();
}

std::string_view seed_kind_name(SeedKind kind) {
  return kind == SeedKind::tcp_listeners ? "tcp-listeners" : "tcp-connections";
}

const std::vector<std::string>& known_filter_names() {
  static const std::vector<std::string> names = {"sport", "dport", "family", "pid", "min-us", "no-failures"};
  return names;
}

Result<ProgramAnnotations> parse_program_annotations(std::string_view source) {
  ProgramAnnotations annotations;
  Status attach = for_each_annotation_word(source, "tcptrace:attach", [&](std::string_view word, size_t line) -> Status {
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
  Status buffers = for_each_annotation_word(source, "tcptrace:buffers", [&](std::string_view word, size_t line) -> Status {
    if (word == "ringbuf") {
      annotations.ring_buffer_capable = true;
    } else if (word != "perf") {
      return runtime_error("line " + std::to_string(line) + ": unknown buffer kind '" + std::string(word) +
                           "' (known: ringbuf, perf)");
    }
    return {};
  });
  if (!buffers) return std::move(buffers).take_error();
  Status filters = for_each_annotation_word(source, "tcptrace:filters", [&](std::string_view word, size_t line) -> Status {
    const auto& known = known_filter_names();
    if (std::find(known.begin(), known.end(), word) == known.end()) {
      return runtime_error("line " + std::to_string(line) + ": unknown filter '" + std::string(word) + "'");
    }
    annotations.filters.emplace_back(word);
    return {};
  });
  if (!filters) return std::move(filters).take_error();
  Status seed = for_each_annotation_word(source, "tcptrace:seed", [&](std::string_view word, size_t line) -> Status {
    const std::string where = "line " + std::to_string(line) + ": tcptrace:seed '" + std::string(word) + "': ";
    const size_t eq = word.find('=');
    if (eq == std::string_view::npos) return runtime_error(where + "expected KIND=MAP");
    const std::string_view kind_name = word.substr(0, eq);
    const std::string_view map = word.substr(eq + 1);
    SeedKind kind;
    if (kind_name == seed_kind_name(SeedKind::tcp_listeners)) {
      kind = SeedKind::tcp_listeners;
    } else if (kind_name == seed_kind_name(SeedKind::tcp_connections)) {
      kind = SeedKind::tcp_connections;
    } else {
      return runtime_error(where + "unknown kind (known: tcp-listeners, tcp-connections)");
    }
    if (!is_identifier(map)) return runtime_error(where + "the map name is not an identifier");
    for (const SeedDeclaration& seen : annotations.seeds) {
      if (seen.kind == kind) return runtime_error(where + "this kind is already seeded into map '" + seen.map + "'");
    }
    annotations.seeds.push_back({kind, std::string(map)});
    return {};
  });
  if (!seed) return std::move(seed).take_error();
  return annotations;
}

}  // namespace tcptrace
