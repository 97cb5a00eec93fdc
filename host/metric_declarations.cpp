#include "metric_declarations.h"

#include <charconv>
#include <cmath>
#include <optional>

#include "annotation_lines.h"

namespace tcptrace {
namespace {

bool blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return s;
}

// The text of a comment line after its comment syntax ("//", " * ").
std::string_view comment_text(std::string_view line) {
  line = trim(line);
  if (line.substr(0, 2) == "//") {
    line.remove_prefix(2);
  } else if (line.substr(0, 2) == "/*") {
    line.remove_prefix(2);
  } else if (!line.empty() && line.front() == '*' && line.substr(0, 2) != "*/") {
    line.remove_prefix(1);
  }
  if (const size_t close = line.find("*/"); close != std::string_view::npos) line = line.substr(0, close);
  return trim(line);
}

std::vector<std::string_view> split_lines(std::string_view source) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start <= source.size()) {
    size_t end = source.find('\n', start);
    if (end == std::string_view::npos) end = source.size();
    lines.push_back(source.substr(start, end - start));
    if (end == source.size()) break;
    start = end + 1;
  }
  return lines;
}

// Words of a declaration; a word may hold a quoted part (help="a b").
// Returns nullopt on an unterminated quote.
std::optional<std::vector<std::string>> split_words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && blank(text[i])) ++i;
    if (i >= text.size()) break;
    std::string word;
    while (i < text.size() && !blank(text[i])) {
      if (text[i] != '"') {
        word.push_back(text[i++]);
        continue;
      }
      ++i;
      bool closed = false;
      while (i < text.size()) {
        if (text[i] == '\\' && i + 1 < text.size()) {
          word.push_back(text[i + 1]);
          i += 2;
        } else if (text[i] == '"') {
          ++i;
          closed = true;
          break;
        } else {
          word.push_back(text[i++]);
        }
      }
      if (!closed) return std::nullopt;
    }
    words.push_back(std::move(word));
  }
  return words;
}

bool is_metric_name(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::vector<std::string_view> split_commas(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t comma = s.find(',', start);
    parts.push_back(s.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return parts;
}

std::optional<double> parse_double(std::string_view text) {
  if (text.empty()) return std::nullopt;
  const std::string copy(text);
  char* end = nullptr;
  const double value = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size() || !std::isfinite(value)) return std::nullopt;
  return value;
}

// Field units per exported unit, and whether values are durations.
std::optional<std::pair<uint64_t, bool>> unit_info(std::string_view unit) {
  if (unit == "ns") return std::make_pair(uint64_t{1000000000}, true);
  if (unit == "us") return std::make_pair(uint64_t{1000000}, true);
  if (unit == "ms") return std::make_pair(uint64_t{1000}, true);
  if (unit == "s") return std::make_pair(uint64_t{1}, true);
  if (unit == "bytes" || unit == "none") return std::make_pair(uint64_t{1}, false);
  return std::nullopt;
}

// A bound as written, in the exported unit: a number, or for a time unit a
// number with a suffix (100us, 1ms, 2s).
std::optional<double> parse_bound(std::string_view text, bool duration) {
  if (duration) {
    static const std::pair<std::string_view, double> suffixes[] = {{"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1}};
    for (const auto& [suffix, scale] : suffixes) {
      if (text.size() > suffix.size() && text.substr(text.size() - suffix.size()) == suffix) {
        const std::string_view number = text.substr(0, text.size() - suffix.size());
        // "1ms" ends in "s" too: the number part must parse.
        if (auto value = parse_double(number)) return *value * scale;
      }
    }
  }
  return parse_double(text);
}

// Bounds in the exported unit from a bucket rule or list.
Result<std::vector<double>> parse_bucket_spec(std::string_view spec, bool duration) {
  const auto rule = [&](std::string_view prefix) -> std::optional<std::vector<std::string_view>> {
    if (spec.substr(0, prefix.size()) != prefix || spec.back() != ')') return std::nullopt;
    return split_commas(spec.substr(prefix.size(), spec.size() - prefix.size() - 1));
  };
  std::vector<double> bounds;
  if (auto args = rule("exp(")) {
    if (args->size() != 3) return runtime_error("exp() takes START,FACTOR,COUNT");
    auto start = parse_bound((*args)[0], duration);
    auto factor = parse_double((*args)[1]);
    auto count = parse_double((*args)[2]);
    if (!start || !factor || !count || *start <= 0 || *factor <= 1 || *count < 1 || *count != std::floor(*count)) {
      return runtime_error("exp(START,FACTOR,COUNT) needs START > 0, FACTOR > 1 and a whole COUNT >= 1");
    }
    if (*count > static_cast<double>(kMaxBuckets)) {
      return runtime_error("exp() gives " + std::to_string(static_cast<long>(*count)) + " bounds; at most " +
                           std::to_string(kMaxBuckets));
    }
    double bound = *start;
    for (int i = 0; i < static_cast<int>(*count); ++i, bound *= *factor) bounds.push_back(bound);
    return bounds;
  }
  if (auto args = rule("log2(")) {
    if (args->size() != 2) return runtime_error("log2() takes LOW,HIGH");
    auto low = parse_bound((*args)[0], duration);
    auto high = parse_bound((*args)[1], duration);
    if (!low || !high || *low <= 0 || *high < *low) return runtime_error("log2(LOW,HIGH) needs 0 < LOW <= HIGH");
    for (double bound = *low;; bound *= 2) {
      bounds.push_back(bound);
      if (bound >= *high) break;
      if (bounds.size() > kMaxBuckets) break;
    }
    return bounds;
  }
  for (std::string_view part : split_commas(spec)) {
    auto bound = parse_bound(part, duration);
    if (!bound) return runtime_error("'" + std::string(part) + "' is not a bucket bound");
    bounds.push_back(*bound);
  }
  return bounds;
}

std::optional<CompareOp> parse_op(std::string_view text) {
  if (text == "==") return CompareOp::eq;
  if (text == "!=") return CompareOp::ne;
  if (text == "<") return CompareOp::lt;
  if (text == "<=") return CompareOp::le;
  if (text == ">") return CompareOp::gt;
  if (text == ">=") return CompareOp::ge;
  return std::nullopt;
}

Result<MetricCondition> parse_condition(std::string_view text) {
  size_t op_start = 0;
  while (op_start < text.size() && text[op_start] != '=' && text[op_start] != '!' && text[op_start] != '<' &&
         text[op_start] != '>') {
    ++op_start;
  }
  size_t op_end = op_start;
  while (op_end < text.size() && (text[op_end] == '=' || text[op_end] == '!' || text[op_end] == '<' ||
                                  text[op_end] == '>')) {
    ++op_end;
  }
  const std::string_view field = text.substr(0, op_start);
  const auto op = parse_op(text.substr(op_start, op_end - op_start));
  const std::string_view number = text.substr(op_end);
  MetricCondition condition;
  if (!is_identifier(field) || !op || number.empty()) {
    return runtime_error("when='" + std::string(text) + "' is not FIELD OP NUMBER (OP: == != < <= > >=)");
  }
  const auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), condition.constant);
  if (ec != std::errc() || ptr != number.data() + number.size()) {
    return runtime_error("when='" + std::string(text) + "': '" + std::string(number) + "' is not an integer");
  }
  condition.field = std::string(field);
  condition.op = *op;
  return condition;
}

// The family fields of the program: those ip() hints name.
bool is_family_field(const std::vector<FormatHint>& hints, const std::string& table, std::string_view field) {
  for (const FormatHint& hint : hints) {
    if (hint.format != FieldFormat::ip_address) continue;
    if (!hint.table.empty() && !table.empty() && hint.table != table) continue;
    const std::string family = hint.arguments.empty() ? "family" : hint.arguments.front();
    if (family == field) return true;
  }
  return false;
}

const FormatHint* hint_for(const std::vector<FormatHint>& hints, const std::string& table, std::string_view field) {
  const FormatHint* found = nullptr;
  for (const FormatHint& hint : hints) {
    if (hint.field != field || hint.format == FieldFormat::by_type) continue;
    if (!hint.table.empty() && !table.empty() && hint.table != table) continue;
    found = &hint;
  }
  return found;
}

Result<MetricLabel> parse_label(std::string_view text, const std::vector<FormatHint>& hints,
                                const std::string& table) {
  MetricLabel label;
  if (!text.empty() && text.back() == '?') {
    label.opt_in = true;
    text.remove_suffix(1);
  }
  const size_t colon = text.find(':');
  const std::string_view name = colon == std::string_view::npos ? text : text.substr(0, colon);
  const std::string_view field = colon == std::string_view::npos ? text : text.substr(colon + 1);
  if (!is_identifier(name) || !is_identifier(field)) {
    return runtime_error("label '" + std::string(text) + "' is not FIELD or LABEL:FIELD (with '?' for opt-in)");
  }
  if (name.substr(0, 2) == "__" || name == "le" || name == "quantile") {
    return runtime_error("label name '" + std::string(name) + "' is reserved by Prometheus");
  }
  label.name = std::string(name);
  label.field = std::string(field);
  if (const FormatHint* hint = hint_for(hints, table, field); hint && hint->format == FieldFormat::enumeration) {
    label.domain = LabelDomain::names;
    label.names = hint->arguments;
  } else if (hint && hint->format == FieldFormat::tcp_state) {
    label.domain = LabelDomain::tcp_state;
  } else if (is_family_field(hints, table, field)) {
    label.domain = LabelDomain::family;
  } else {
    label.domain = label.opt_in ? LabelDomain::folded : LabelDomain::small;
  }
  return label;
}

struct DeclarationLine {
  size_t line;
  std::string text;  // after the marker, continuations joined
};

std::vector<DeclarationLine> marker_lines(const std::vector<std::string_view>& lines, std::string_view marker) {
  std::vector<DeclarationLine> found;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t at = lines[i].find(marker);
    if (at == std::string_view::npos) continue;
    std::string_view rest = lines[i].substr(at + marker.size());
    if (!rest.empty() && !blank(rest.front())) continue;  // "tcptrace:metrics" is another word
    if (const size_t close = rest.find("*/"); close != std::string_view::npos) rest = rest.substr(0, close);
    DeclarationLine declaration{i + 1, std::string(trim(rest))};
    while (!declaration.text.empty() && declaration.text.back() == '\\' && i + 1 < lines.size()) {
      declaration.text.pop_back();
      declaration.text += " ";
      declaration.text += comment_text(lines[++i]);
    }
    found.push_back(std::move(declaration));
  }
  return found;
}

}  // namespace

std::vector<double> MetricDeclaration::exported_bounds() const {
  std::vector<double> exported;
  for (uint64_t bound : bounds) exported.push_back(static_cast<double>(bound) / static_cast<double>(unit_divisor));
  return exported;
}

size_t label_slots(const MetricLabel& label, size_t folded_limit) {
  switch (label.domain) {
    case LabelDomain::names:
      return label.names.size() + 1;
    case LabelDomain::tcp_state:
      return 16;
    case LabelDomain::family:
      return 3;
    case LabelDomain::small:
      return 257;
    case LabelDomain::folded:
      return folded_limit + 1;
  }
  return 1;
}

size_t label_slot(const MetricLabel& label, uint64_t value) {
  switch (label.domain) {
    case LabelDomain::names:
      return value < label.names.size() ? static_cast<size_t>(value) : label.names.size();
    case LabelDomain::tcp_state:
      return value < 16 ? static_cast<size_t>(value) : 0;
    case LabelDomain::family:
      return value == 4 || value == 2 ? 0 : value == 6 || value == 10 ? 1 : 2;
    case LabelDomain::small:
    case LabelDomain::folded:
      return value < 256 ? static_cast<size_t>(value) : 256;
  }
  return 0;
}

std::string label_value(const MetricLabel& label, size_t slot) {
  switch (label.domain) {
    case LabelDomain::names:
      return slot < label.names.size() ? label.names[slot] : "unknown";
    case LabelDomain::tcp_state: {
      const std::string_view name = tcp_state_name(slot);
      return name.empty() ? "UNKNOWN" : std::string(name);
    }
    case LabelDomain::family:
      return slot == 0 ? "ipv4" : slot == 1 ? "ipv6" : "other";
    case LabelDomain::small:
    case LabelDomain::folded:
      return slot < 256 ? std::to_string(slot) : "other";
  }
  return "";
}

std::string_view compare_op_text(CompareOp op) {
  switch (op) {
    case CompareOp::eq:
      return "==";
    case CompareOp::ne:
      return "!=";
    case CompareOp::lt:
      return "<";
    case CompareOp::le:
      return "<=";
    case CompareOp::gt:
      return ">";
    case CompareOp::ge:
      return ">=";
  }
  return "";
}

bool condition_holds(const MetricCondition& condition, uint64_t raw, bool is_signed) {
  // As C compares the field with an integer constant: signed fields as
  // signed, unsigned ones with the constant converted to their type (the
  // constant is checked non-negative for them).
  int order;
  if (is_signed) {
    const auto value = static_cast<int64_t>(raw);
    order = value < condition.constant ? -1 : value > condition.constant ? 1 : 0;
  } else {
    const auto constant = static_cast<uint64_t>(condition.constant);
    order = raw < constant ? -1 : raw > constant ? 1 : 0;
  }
  switch (condition.op) {
    case CompareOp::eq:
      return order == 0;
    case CompareOp::ne:
      return order != 0;
    case CompareOp::lt:
      return order < 0;
    case CompareOp::le:
      return order <= 0;
    case CompareOp::gt:
      return order > 0;
    case CompareOp::ge:
      return order >= 0;
  }
  return false;
}

Result<ProgramDeclarations> parse_program_declarations(std::string_view source, const std::string& path,
                                                       const std::vector<FormatHint>& hints) {
  const std::vector<std::string_view> lines = split_lines(source);
  ProgramDeclarations declarations;
  std::vector<std::string> mistakes;
  const auto mistake = [&](size_t line, const std::string& text) {
    mistakes.push_back(path + ":" + std::to_string(line) + ": " + text);
  };

  for (const DeclarationLine& found : marker_lines(lines, kOutputMarker)) {
    const std::optional<std::vector<std::string>> words = split_words(found.text);
    if (!words || words->size() != 2 || !is_identifier((*words)[0]) || !is_identifier((*words)[1])) {
      mistake(found.line, "tcptrace:output takes TABLE STRUCT (e.g. 'tcptrace:output events event')");
      continue;
    }
    const std::string_view line = trim(lines[found.line - 1]);
    const bool alone = (line.substr(0, 2) == "//") ||
                       (line.substr(0, 2) == "/*" && line.size() >= 4 && line.substr(line.size() - 2) == "*/");
    if (!alone) {
      mistake(found.line, "tcptrace:output must be a comment alone on its line (the host replaces that line)");
      continue;
    }
    bool repeated = false;
    for (const OutputDeclaration& seen : declarations.outputs) repeated |= seen.table == (*words)[0];
    if (repeated) {
      mistake(found.line, "output table '" + (*words)[0] + "' is declared twice");
      continue;
    }
    declarations.outputs.push_back({(*words)[0], (*words)[1], found.line});
  }

  for (const DeclarationLine& found : marker_lines(lines, kMetricMarker)) {
    const std::optional<std::vector<std::string>> words = split_words(found.text);
    if (!words) {
      mistake(found.line, "tcptrace:metric: a quoted value has no closing '\"'");
      continue;
    }
    if (words->size() < 2 || ((*words)[0] != "counter" && (*words)[0] != "histogram")) {
      mistake(found.line, "tcptrace:metric takes counter|histogram NAME KEY=VALUE...");
      continue;
    }
    MetricDeclaration metric;
    metric.kind = (*words)[0] == "counter" ? MetricKind::counter : MetricKind::histogram;
    metric.name = (*words)[1];
    metric.line = found.line;
    const std::string where = "metric " + metric.name + ": ";
    if (!is_metric_name(metric.name)) {
      mistake(found.line, "metric name '" + metric.name + "' is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)");
      continue;
    }
    bool bad = false;
    std::string labels_text, buckets_text;
    bool has_unit = false, has_buckets = false;
    for (size_t i = 2; i < words->size() && !bad; ++i) {
      const std::string& word = (*words)[i];
      const size_t eq = word.find('=');
      if (eq == std::string::npos) {
        mistake(found.line, where + "'" + word + "' is not KEY=VALUE");
        bad = true;
        break;
      }
      const std::string key = word.substr(0, eq);
      const std::string value = word.substr(eq + 1);
      if (key == "help") {
        metric.help = value;
      } else if (key == "labels") {
        labels_text = value;
      } else if (key == "value") {
        if (!is_identifier(value)) {
          mistake(found.line, where + "value='" + value + "' is not a field name");
          bad = true;
        }
        metric.value_field = value;
      } else if (key == "unit") {
        if (!unit_info(value)) {
          mistake(found.line, where + "unit '" + value + "' is not one of ns, us, ms, s, bytes, none");
          bad = true;
        }
        metric.unit = value;
        has_unit = true;
      } else if (key == "buckets") {
        buckets_text = value;
        has_buckets = true;
      } else if (key == "when") {
        auto condition = parse_condition(value);
        if (!condition) {
          mistake(found.line, where + condition.error().message);
          bad = true;
        } else {
          metric.conditions.push_back(std::move(condition).value());
        }
      } else if (key == "table") {
        if (!is_identifier(value)) {
          mistake(found.line, where + "table='" + value + "' is not a table name");
          bad = true;
        }
        metric.table = value;
      } else if (key == "map") {
        if (!is_identifier(value)) {
          mistake(found.line, where + "map='" + value + "' is not a map name");
          bad = true;
        }
        metric.map = value;
      } else {
        mistake(found.line,
                where + "unknown key '" + key + "' (known: labels, value, unit, buckets, when, table, map, help)");
        bad = true;
      }
    }
    if (bad) continue;
    if (!metric.map.empty() && (!metric.value_field.empty() || has_unit || has_buckets ||
                                !metric.conditions.empty() || !metric.table.empty())) {
      mistake(found.line, where + "map= reads the values, unit and buckets from the map: value=, unit=, buckets=, "
                                  "when= and table= do not go with it");
      continue;
    }
    if (metric.help.empty()) {
      mistake(found.line, where + "help=\"...\" is missing: every metric says what it counts");
      continue;
    }
    if (!labels_text.empty()) {
      for (std::string_view part : split_commas(labels_text)) {
        auto label = parse_label(part, hints, metric.map.empty() ? metric.table : metric.map);
        if (!label) {
          mistake(found.line, where + label.error().message);
          bad = true;
          break;
        }
        for (const MetricLabel& seen : metric.labels) {
          if (seen.name == label->name) {
            mistake(found.line, where + "label '" + label->name + "' appears twice");
            bad = true;
          }
        }
        metric.labels.push_back(std::move(label).value());
      }
      if (bad) continue;
    }
    const auto declared_before = [&](const std::string& name) {
      for (const auto* list : {&declarations.metrics, &declarations.map_metrics}) {
        for (const MetricDeclaration& seen : *list) {
          if (seen.name == name) return true;
        }
      }
      return false;
    };
    if (!metric.map.empty()) {
      // Read from a map: no kernel array to size, no buckets of its own.
      if (declared_before(metric.name)) {
        mistake(found.line, where + "declared twice");
        continue;
      }
      declarations.map_metrics.push_back(std::move(metric));
      continue;
    }
    if (metric.kind == MetricKind::histogram) {
      if (metric.value_field.empty() || !has_unit || !has_buckets) {
        mistake(found.line, where + "a histogram needs value=FIELD, unit=UNIT and buckets=SPEC");
        continue;
      }
      const auto [divisor, duration] = *unit_info(metric.unit);
      metric.unit_divisor = divisor;
      auto bounds = parse_bucket_spec(buckets_text, duration);
      if (!bounds) {
        mistake(found.line, where + "buckets=" + buckets_text + ": " + bounds.error().message);
        continue;
      }
      if (bounds->empty() || bounds->size() > kMaxBuckets) {
        mistake(found.line, where + "buckets=" + buckets_text + " gives " + std::to_string(bounds->size()) +
                                " bounds; 1 to " + std::to_string(kMaxBuckets) + " are allowed");
        continue;
      }
      for (double bound : *bounds) {
        // Field values are integers: v <= b holds exactly when v <= floor(b).
        const double in_field_units = std::floor(bound * static_cast<double>(divisor) + 1e-9);
        if (in_field_units < 0 || in_field_units > 1.8e19) {
          mistake(found.line, where + "bucket bound " + std::to_string(bound) + " is out of range");
          bad = true;
          break;
        }
        const auto as_integer = static_cast<uint64_t>(in_field_units);
        if (!metric.bounds.empty() && as_integer <= metric.bounds.back()) {
          mistake(found.line, where + "buckets=" + buckets_text + ": bounds must increase (in " + metric.unit +
                                  ", the field's unit)");
          bad = true;
          break;
        }
        metric.bounds.push_back(as_integer);
      }
      if (bad) continue;
    } else if (has_unit || has_buckets) {
      mistake(found.line, where + "unit= and buckets= belong to histograms");
      continue;
    }
    // The label sets a kernel array would hold: opt-in labels are counted
    // in the host only, so only the others count.
    size_t sets = 1;
    std::string factors;
    for (const MetricLabel& label : metric.labels) {
      if (label.opt_in) continue;
      sets *= label_slots(label, 0);
      factors += (factors.empty() ? "" : " x ") + std::to_string(label_slots(label, 0));
    }
    if (sets > kMaxKernelLabelSets) {
      mistake(found.line, where + "its labels have " + std::to_string(sets) + " combinations (" + factors +
                              "); at most " + std::to_string(kMaxKernelLabelSets) +
                              " fit a kernel array (give small fields an enum() hint)");
      continue;
    }
    if (declared_before(metric.name)) {
      mistake(found.line, where + "declared twice");
      continue;
    }
    declarations.metrics.push_back(std::move(metric));
  }

  for (const MetricDeclaration& metric : declarations.metrics) {
    if (!metric.table.empty()) {
      bool known = false;
      for (const OutputDeclaration& output : declarations.outputs) known |= output.table == metric.table;
      if (!known && !declarations.outputs.empty()) {
        mistake(metric.line, "metric " + metric.name + ": no 'tcptrace:output " + metric.table + " ...' line");
      }
    } else if (declarations.outputs.size() > 1) {
      mistake(metric.line, "metric " + metric.name + ": the program has several output tables; say which with table=");
    }
  }

  if (!mistakes.empty()) {
    std::string text;
    for (const std::string& m : mistakes) text += (text.empty() ? "" : "\n") + m;
    return runtime_error(text);
  }
  return declarations;
}

}  // namespace tcptrace
