#include "text_output.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace tcptrace {
namespace {

std::string upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  return out;
}

void append_cell(std::string& out, const std::string& text, const TextColumns::Column& column, bool last) {
  const size_t pad = text.size() < column.width ? column.width - text.size() : 0;
  if (column.right) out.append(pad, ' ');
  out += text;
  if (!column.right && !last) out.append(pad, ' ');
}

size_t integer_width(const FieldLayout& field) {
  const bool is_signed = field.kind == ScalarKind::signed_int;
  size_t width = 16;
  switch (field.element_size) {
    case 1: width = 3; break;
    case 2: width = 5; break;
    case 4: width = 10; break;
    default: break;
  }
  return width + (is_signed ? 1 : 0);
}

}  // namespace

TextColumns TextColumns::make(const EventLayout& layout, const std::vector<FormatHint>& hints, const std::string& table,
                              bool with_event, bool with_time) {
  TextColumns text;
  if (with_event) text.columns_.push_back({"event", table.size(), false});
  if (with_time) text.columns_.push_back({"time", 15, false});
  for (const FieldLayout& field : layout.fields) {
    Column column{field.name, 0, false};
    FieldFormat format = FieldFormat::by_type;
    size_t enum_width = 0;
    for (const FormatHint& hint : hints) {
      if (hint.field != field.name || (!hint.table.empty() && hint.table != table)) continue;
      if (hint.format != FieldFormat::by_type) format = hint.format;
      for (const std::string& name : hint.arguments) enum_width = std::max(enum_width, name.size());
    }
    switch (format) {
      case FieldFormat::ip_address: column.width = field.size() == 4 ? 15 : 26; break;
      case FieldFormat::hex: column.width = 18; break;
      case FieldFormat::tcp_state: column.width = 12; break;
      case FieldFormat::errno_name: column.width = 12; break;
      case FieldFormat::enumeration: column.width = enum_width; break;
      case FieldFormat::string: column.width = std::min<size_t>(field.count, 32); break;
      case FieldFormat::by_type:
        if (field.is_array && field.kind == ScalarKind::character) {
          column.width = std::min<size_t>(field.count, 32);
        } else if (field.is_array || field.kind == ScalarKind::record) {
          column.width = 0;
        } else if (field.kind == ScalarKind::boolean) {
          column.width = 5;
        } else if (field.kind == ScalarKind::pointer) {
          column.width = 18;
        } else {
          column.width = integer_width(field);
          column.right = true;
        }
        break;
    }
    text.columns_.push_back(column);
  }
  for (size_t i = 0; i < text.columns_.size(); ++i) {
    Column& column = text.columns_[i];
    const std::string name = upper(column.key);
    column.width = std::max(column.width, name.size());
    append_cell(text.header_, name, column, i + 1 == text.columns_.size());
    if (i + 1 < text.columns_.size()) text.header_ += ' ';
  }
  text.header_ += '\n';
  return text;
}

void TextColumns::append_row(std::string& out, std::string_view json_line) const {
  const auto line = nlohmann::ordered_json::parse(json_line, nullptr, false);
  if (!line.is_object()) return;
  for (size_t i = 0; i < columns_.size(); ++i) {
    const Column& column = columns_[i];
    std::string cell = "-";
    if (auto it = line.find(column.key); it != line.end() && !it->is_null()) {
      cell = it->is_string() ? it->get<std::string>() : it->dump();
      // "2026-11-21T23:46:18.916800Z" -> "23:46:18.916800"
      if (column.key == "time" && i < 2 && cell.size() > 12 && cell.find('T') != std::string::npos) {
        cell = cell.substr(cell.find('T') + 1);
        if (!cell.empty() && cell.back() == 'Z') cell.pop_back();
      }
    }
    append_cell(out, cell, column, i + 1 == columns_.size());
    if (i + 1 < columns_.size()) out += ' ';
  }
  out += '\n';
}

}  // namespace tcptrace
