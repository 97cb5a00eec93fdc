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

bool ProgramAnnotations::is_histogram(std::string_view map) const {
  return std::find(histograms.begin(), histograms.end(), map) != histograms.end();
}

const TableDeclaration* ProgramAnnotations::listed_table(std::string_view map) const {
  for (const TableDeclaration& table : tables) {
    if (table.map == map) return &table;
  }
  return nullptr;
}

std::string_view table_unit_name(TableUnit unit) {
  switch (unit) {
    case TableUnit::none: return "";
    case TableUnit::ns: return "ns";
    case TableUnit::us: return "us";
    case TableUnit::ms: return "ms";
    case TableUnit::s: return "s";
    case TableUnit::bytes: return "bytes";
  }
  return "";
}

std::vector<std::string> histogram_declarations(std::string_view source) {
  std::vector<std::string> names;
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  // The argument that starts at `at`, trimmed; `at` moves past its comma.
  auto argument = [&](size_t& at) {
    size_t end = at;
    while (end < source.size() && source[end] != ',' && source[end] != ')') ++end;
    std::string_view word = source.substr(at, end - at);
    while (!word.empty() && blank(word.front())) word.remove_prefix(1);
    while (!word.empty() && blank(word.back())) word.remove_suffix(1);
    at = end < source.size() ? end + 1 : end;
    return word;
  };
  auto add = [&](std::string_view name) {
    if (is_identifier(name) && std::find(names.begin(), names.end(), name) == names.end()) names.emplace_back(name);
  };
  for (size_t at = source.find("BPF_HISTOGRAM("); at != std::string_view::npos;
       at = source.find("BPF_HISTOGRAM(", at + 1)) {
    size_t arg = at + std::string_view("BPF_HISTOGRAM(").size();
    add(argument(arg));
  }
  for (size_t at = source.find("BPF_TABLE("); at != std::string_view::npos; at = source.find("BPF_TABLE(", at + 1)) {
    size_t arg = at + std::string_view("BPF_TABLE(").size();
    if (argument(arg) != "\"histogram\"") continue;
    argument(arg);  // key type
    argument(arg);  // value type
    add(argument(arg));
  }
  return names;
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
  Status tables = for_each_annotation_word(source, "tcptrace:tables", [&](std::string_view word, size_t line) -> Status {
    const std::string where = "line " + std::to_string(line) + ": tcptrace:tables '" + std::string(word) + "': ";
    annotations.tables_listed = true;
    TableDeclaration table;
    if (!word.empty() && word.back() == '?') {
      table.optional = true;
      word.remove_suffix(1);
    }
    const size_t eq = word.find('=');
    table.map = std::string(word.substr(0, eq));
    if (!is_identifier(table.map)) return runtime_error(where + "the map name is not an identifier");
    if (eq != std::string_view::npos) {
      const std::string_view unit = word.substr(eq + 1);
      for (TableUnit known : {TableUnit::ns, TableUnit::us, TableUnit::ms, TableUnit::s, TableUnit::bytes}) {
        if (unit == table_unit_name(known)) table.unit = known;
      }
      if (table.unit == TableUnit::none) return runtime_error(where + "unknown unit (known: ns, us, ms, s, bytes)");
    }
    if (table.map.rfind("tcptrace_", 0) == 0) {
      return runtime_error(where + "maps named tcptrace_* are the host's own");
    }
    if (annotations.listed_table(table.map) != nullptr) return runtime_error(where + "this map is listed twice");
    annotations.tables.push_back(std::move(table));
    return {};
  });
  if (!tables) return std::move(tables).take_error();
  Status offsets = for_each_annotation_word(source, "tcptrace:offsets", [&](std::string_view word, size_t line) -> Status {
    const std::string where = "line " + std::to_string(line) + ": tcptrace:offsets '" + std::string(word) + "': ";
    const size_t eq = word.find('=');
    const size_t dot = eq == std::string_view::npos ? std::string_view::npos : word.find('.', eq);
    if (dot == std::string_view::npos) return runtime_error(where + "expected NAME=STRUCT.MEMBER");
    OffsetDeclaration offset;
    offset.name = std::string(word.substr(0, eq));
    offset.struct_name = std::string(word.substr(eq + 1, dot - eq - 1));
    offset.member_path = std::string(word.substr(dot + 1));
    if (!is_identifier(offset.name)) return runtime_error(where + "the name is not an identifier");
    if (!is_identifier(offset.struct_name)) return runtime_error(where + "the struct name is not an identifier");
    std::string_view rest = offset.member_path;
    while (true) {
      const size_t next = rest.find('.');
      if (!is_identifier(rest.substr(0, next))) {
        return runtime_error(where + "each member in the path must be an identifier");
      }
      if (next == std::string_view::npos) break;
      rest.remove_prefix(next + 1);
    }
    for (const OffsetDeclaration& seen : annotations.offsets) {
      if (seen.name == offset.name) return runtime_error(where + "the name " + offset.name + " is given twice");
    }
    annotations.offsets.push_back(std::move(offset));
    return {};
  });
  if (!offsets) return std::move(offsets).take_error();
  annotations.histograms = histogram_declarations(source);
  return annotations;
}

}  // namespace tcptrace
