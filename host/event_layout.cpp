#include "event_layout.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <optional>

#include <nlohmann/json.hpp>

namespace tcptrace {
namespace {

struct ScalarType {
  std::string_view spelling;
  ScalarKind kind;
  size_t size;
};

// The scalar spellings clang prints for members of BPF event structs: C base
// types, BCC's and the kernel's fixed-width typedefs (bcc/helpers.h and
// linux/types.h), and the libc names users bring along.
constexpr std::array kScalarTypes = {
    ScalarType{"u8", ScalarKind::unsigned_int, 1},
    ScalarType{"u16", ScalarKind::unsigned_int, 2},
    ScalarType{"u32", ScalarKind::unsigned_int, 4},
    ScalarType{"u64", ScalarKind::unsigned_int, 8},
    ScalarType{"__u8", ScalarKind::unsigned_int, 1},
    ScalarType{"__u16", ScalarKind::unsigned_int, 2},
    ScalarType{"__u32", ScalarKind::unsigned_int, 4},
    ScalarType{"__u64", ScalarKind::unsigned_int, 8},
    ScalarType{"__be16", ScalarKind::unsigned_int, 2},
    ScalarType{"__be32", ScalarKind::unsigned_int, 4},
    ScalarType{"__be64", ScalarKind::unsigned_int, 8},
    ScalarType{"uint8_t", ScalarKind::unsigned_int, 1},
    ScalarType{"uint16_t", ScalarKind::unsigned_int, 2},
    ScalarType{"uint32_t", ScalarKind::unsigned_int, 4},
    ScalarType{"uint64_t", ScalarKind::unsigned_int, 8},
    ScalarType{"s8", ScalarKind::signed_int, 1},
    ScalarType{"s16", ScalarKind::signed_int, 2},
    ScalarType{"s32", ScalarKind::signed_int, 4},
    ScalarType{"s64", ScalarKind::signed_int, 8},
    ScalarType{"__s8", ScalarKind::signed_int, 1},
    ScalarType{"__s16", ScalarKind::signed_int, 2},
    ScalarType{"__s32", ScalarKind::signed_int, 4},
    ScalarType{"__s64", ScalarKind::signed_int, 8},
    ScalarType{"int8_t", ScalarKind::signed_int, 1},
    ScalarType{"int16_t", ScalarKind::signed_int, 2},
    ScalarType{"int32_t", ScalarKind::signed_int, 4},
    ScalarType{"int64_t", ScalarKind::signed_int, 8},
    ScalarType{"char", ScalarKind::character, 1},
    ScalarType{"signed char", ScalarKind::character, 1},
    ScalarType{"unsigned char", ScalarKind::character, 1},
    ScalarType{"short", ScalarKind::signed_int, 2},
    ScalarType{"short int", ScalarKind::signed_int, 2},
    ScalarType{"unsigned short", ScalarKind::unsigned_int, 2},
    ScalarType{"unsigned short int", ScalarKind::unsigned_int, 2},
    ScalarType{"int", ScalarKind::signed_int, 4},
    ScalarType{"signed int", ScalarKind::signed_int, 4},
    ScalarType{"signed", ScalarKind::signed_int, 4},
    ScalarType{"unsigned int", ScalarKind::unsigned_int, 4},
    ScalarType{"unsigned", ScalarKind::unsigned_int, 4},
    ScalarType{"long", ScalarKind::signed_int, 8},
    ScalarType{"long int", ScalarKind::signed_int, 8},
    ScalarType{"unsigned long", ScalarKind::unsigned_int, 8},
    ScalarType{"unsigned long int", ScalarKind::unsigned_int, 8},
    ScalarType{"long long", ScalarKind::signed_int, 8},
    ScalarType{"long long int", ScalarKind::signed_int, 8},
    ScalarType{"unsigned long long", ScalarKind::unsigned_int, 8},
    ScalarType{"unsigned long long int", ScalarKind::unsigned_int, 8},
    ScalarType{"size_t", ScalarKind::unsigned_int, 8},
    ScalarType{"ssize_t", ScalarKind::signed_int, 8},
    ScalarType{"pid_t", ScalarKind::signed_int, 4},
    ScalarType{"uid_t", ScalarKind::unsigned_int, 4},
    ScalarType{"gid_t", ScalarKind::unsigned_int, 4},
    ScalarType{"_Bool", ScalarKind::boolean, 1},
    ScalarType{"bool", ScalarKind::boolean, 1},
    ScalarType{"unsigned __int128", ScalarKind::unsigned_int, 16},
    ScalarType{"__int128", ScalarKind::signed_int, 16},
    ScalarType{"__uint128_t", ScalarKind::unsigned_int, 16},
    ScalarType{"__int128_t", ScalarKind::signed_int, 16},
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

// Drops qualifiers that do not change the layout.
std::string_view strip_qualifiers(std::string_view s) {
  for (std::string_view q : {"const ", "volatile "}) {
    while (s.substr(0, q.size()) == q) s.remove_prefix(q.size());
  }
  return trim(s);
}

size_t align_up(size_t value, size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

}  // namespace

const FieldLayout* EventLayout::find(std::string_view name) const {
  for (const auto& field : fields) {
    if (field.name == name) return &field;
  }
  return nullptr;
}

Result<FieldLayout> parse_field_description(std::string_view description) {
  const size_t hash = description.find('#');
  if (hash == std::string_view::npos || hash == 0) {
    return runtime_error("malformed event field description '" + std::string(description) +
                         "' (expected name#type)");
  }
  FieldLayout field;
  field.name = std::string(description.substr(0, hash));
  field.type = std::string(description.substr(hash + 1));

  // Split "T[2][3]" / "T [16]" into the element type and its dimensions.
  std::string_view type = trim(description.substr(hash + 1));
  const size_t bracket = type.find('[');
  std::string_view base = strip_qualifiers(trim(type.substr(0, bracket)));
  if (bracket != std::string_view::npos) {
    field.is_array = true;
    std::string_view dims = type.substr(bracket);
    while (!dims.empty()) {
      if (dims.front() != '[') break;
      const size_t close = dims.find(']');
      if (close == std::string_view::npos) break;
      std::string_view number = trim(dims.substr(1, close - 1));
      size_t n = 0;
      auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), n);
      if (ec != std::errc() || ptr != number.data() + number.size() || n == 0) {
        return runtime_error("field '" + field.name + "' has array type '" + field.type +
                             "' whose length the decoder cannot read");
      }
      field.count *= n;
      dims = trim(dims.substr(close + 1));
    }
    if (!dims.empty()) {
      return runtime_error("field '" + field.name + "' has unsupported type '" + field.type + "'");
    }
  }

  if (!base.empty() && base.back() == '*') {
    field.kind = ScalarKind::pointer;
    field.element_size = field.alignment = 8;
    return field;
  }
  if (base.substr(0, 5) == "enum ") {
    field.kind = ScalarKind::signed_int;  // C enums are int-sized on BPF
    field.element_size = field.alignment = 4;
    return field;
  }
  if (base.substr(0, 7) == "struct " || base.substr(0, 6) == "union ") {
    if (base.find("(anonymous") != std::string_view::npos || base.find("(unnamed") != std::string_view::npos) {
      return runtime_error("field '" + field.name +
                           "' has an anonymous struct type, which the decoder cannot look up: give it a name");
    }
    field.kind = ScalarKind::record;
    field.record_type = std::string(base);
    return field;
  }
  for (const auto& scalar : kScalarTypes) {
    if (scalar.spelling == base) {
      field.kind = scalar.kind;
      field.element_size = field.alignment = scalar.size;
      return field;
    }
  }
  return runtime_error("field '" + field.name + "' has type '" + field.type +
                       "', which the decoder cannot lay out (use fixed-width integers, "
                       "char arrays or arrays of integers)");
}

Result<EventLayout> parse_event_layout(const std::vector<std::string>& descriptions, const RecordLayouts& records) {
  EventLayout layout;
  if (descriptions.empty()) {
    return runtime_error("event struct has no fields");
  }
  size_t offset = 0;
  for (const auto& description : descriptions) {
    auto field = parse_field_description(description);
    if (!field) return std::move(field).take_error();
    if (field->kind == ScalarKind::record) {
      auto known = records.find(field->record_type);
      if (known == records.end() || !known->second) {
        return runtime_error("field '" + field->name + "' has type '" + field->record_type +
                             "', whose layout is unknown");
      }
      field->record = known->second;
      field->element_size = known->second->size;
      field->alignment = known->second->alignment;
    }
    const size_t alignment = field->alignment;
    field->offset = align_up(offset, alignment);
    offset = field->offset + field->size();
    layout.alignment = std::max(layout.alignment, alignment);
    layout.fields.push_back(std::move(field).value());
  }
  layout.size = align_up(offset, layout.alignment);
  return layout;
}

std::vector<std::string> record_types_used(const std::vector<std::string>& descriptions) {
  std::vector<std::string> types;
  for (const auto& description : descriptions) {
    auto field = parse_field_description(description);
    if (!field || field->kind != ScalarKind::record) continue;
    if (std::find(types.begin(), types.end(), field->record_type) == types.end()) types.push_back(field->record_type);
  }
  return types;
}

namespace {

// Scalar names as BCC spells them in type descriptions: C base types only,
// typedefs resolved. Here "unsigned char" is a byte (u8 arrays print as
// numbers) and plain "char" a character.
std::optional<ScalarType> bcc_scalar(std::string_view name) {
  if (name == "char") return ScalarType{"char", ScalarKind::character, 1};
  if (name == "unsigned char") return ScalarType{"unsigned char", ScalarKind::unsigned_int, 1};
  if (name == "signed char") return ScalarType{"signed char", ScalarKind::signed_int, 1};
  for (const auto& scalar : kScalarTypes) {
    if (scalar.spelling == name) return scalar;
  }
  return std::nullopt;
}

Result<EventLayout> layout_from_json(const nlohmann::json& type, int depth);

Result<FieldLayout> field_from_json(const nlohmann::json& entry, int depth) {
  if (!entry.is_array() || entry.size() < 2 || !entry[0].is_string()) {
    return runtime_error("unexpected field entry " + entry.dump() + " in BCC's type description");
  }
  FieldLayout field;
  field.name = entry[0].get<std::string>();
  const nlohmann::json& type = entry[1];
  if (entry.size() >= 3) {
    if (!entry[2].is_array()) {
      return runtime_error("field '" + field.name + "' is a bit-field, which the decoder cannot read");
    }
    field.is_array = true;
    for (const auto& dim : entry[2]) {
      if (!dim.is_number_unsigned() || dim.get<size_t>() == 0) {
        return runtime_error("field '" + field.name + "' has an array dimension the decoder cannot read");
      }
      field.count *= dim.get<size_t>();
    }
  }
  if (type.is_string()) {
    field.type = type.get<std::string>();
    auto scalar = bcc_scalar(field.type);
    if (!scalar) return runtime_error("field '" + field.name + "' has type '" + field.type + "', unknown to the decoder");
    field.kind = scalar->kind;
    field.element_size = field.alignment = scalar->size;
  } else {
    auto nested = layout_from_json(type, depth + 1);
    if (!nested) return std::move(nested).take_error();
    field.kind = ScalarKind::record;
    field.record_type = "struct " + (type.is_array() && !type.empty() && type[0].is_string() ? type[0].get<std::string>() : "");
    field.type = field.record_type;
    field.element_size = nested->size;
    field.alignment = nested->alignment;
    field.record = std::make_shared<const EventLayout>(std::move(nested).value());
  }
  if (field.is_array) field.type += "[" + std::to_string(field.count) + "]";
  return field;
}

Result<EventLayout> layout_from_json(const nlohmann::json& type, int depth) {
  if (depth > 16) return runtime_error("nested structs deeper than 16 levels");
  if (!type.is_array() || type.size() != 3 || !type[1].is_array() || !type[2].is_string()) {
    return runtime_error("unexpected type description " + type.dump().substr(0, 80));
  }
  const std::string kind = type[2].get<std::string>();
  const bool packed = kind == "struct_packed";
  const bool is_union = kind == "union";
  if (!packed && !is_union && kind != "struct") return runtime_error("unexpected aggregate kind '" + kind + "'");
  EventLayout layout;
  size_t offset = 0;
  for (const auto& entry : type[1]) {
    auto field = field_from_json(entry, depth);
    if (!field) return std::move(field).take_error();
    // "struct_packed" spells out BCC's padding as "__pad_N" members, so the
    // members simply follow each other; plain "struct" uses C alignment.
    field->offset = is_union ? 0 : packed ? offset : align_up(offset, field->alignment);
    offset = std::max(offset, field->offset + field->size());
    layout.alignment = std::max(layout.alignment, field->alignment);
    if (field->name.rfind("__pad_", 0) == 0) continue;
    layout.fields.push_back(std::move(field).value());
  }
  layout.size = packed ? offset : align_up(offset, layout.alignment);
  return layout;
}

}  // namespace

Result<EventLayout> layout_from_bcc_type_description(std::string_view description) {
  nlohmann::json type = nlohmann::json::parse(description, nullptr, false);
  if (type.is_discarded()) return runtime_error("BCC's type description is not valid JSON");
  return layout_from_json(type, 0);
}

}  // namespace tcptrace
