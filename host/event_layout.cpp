#include "event_layout.h"

#include <algorithm>
#include <array>
#include <charconv>

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
    field.element_size = 8;
    return field;
  }
  if (base.substr(0, 5) == "enum ") {
    field.kind = ScalarKind::signed_int;  // C enums are int-sized on BPF
    field.element_size = 4;
    return field;
  }
  for (const auto& scalar : kScalarTypes) {
    if (scalar.spelling == base) {
      field.kind = scalar.kind;
      field.element_size = scalar.size;
      return field;
    }
  }
  return runtime_error("field '" + field.name + "' has type '" + field.type +
                       "', which the decoder cannot lay out (use fixed-width integers, "
                       "char arrays or arrays of integers)");
}

Result<EventLayout> parse_event_layout(const std::vector<std::string>& descriptions) {
  EventLayout layout;
  if (descriptions.empty()) {
    return runtime_error("event struct has no fields");
  }
  size_t offset = 0;
  for (const auto& description : descriptions) {
    auto field = parse_field_description(description);
    if (!field) return std::move(field).take_error();
    const size_t alignment = field->element_size;
    field->offset = align_up(offset, alignment);
    offset = field->offset + field->size();
    layout.alignment = std::max(layout.alignment, alignment);
    layout.fields.push_back(std::move(field).value());
  }
  layout.size = align_up(offset, layout.alignment);
  return layout;
}

}  // namespace tcptrace
