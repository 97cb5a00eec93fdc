#include "event_decoder.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "json_writer.h"

namespace tcptrace {
namespace {

uint64_t read_unsigned(const unsigned char* p, size_t size) {
  switch (size) {
    case 1: return p[0];
    case 2: { uint16_t v; std::memcpy(&v, p, 2); return v; }
    case 4: { uint32_t v; std::memcpy(&v, p, 4); return v; }
    default: { uint64_t v; std::memcpy(&v, p, 8); return v; }
  }
}

int64_t read_signed(const unsigned char* p, size_t size) {
  switch (size) {
    case 1: return static_cast<int8_t>(p[0]);
    case 2: { int16_t v; std::memcpy(&v, p, 2); return v; }
    case 4: { int32_t v; std::memcpy(&v, p, 4); return v; }
    default: { int64_t v; std::memcpy(&v, p, 8); return v; }
  }
}

// 128-bit integers in decimal, as strings (no JSON consumer holds them).
constexpr size_t kMaxInt128StringChars = 2 + 40;  // quotes, sign, 39 digits

char* write_u128_digits(char* p, unsigned __int128 value) {
  char digits[40];
  size_t n = 0;
  do {
    digits[n++] = static_cast<char>('0' + static_cast<int>(value % 10));
    value /= 10;
  } while (value != 0);
  while (n > 0) *p++ = digits[--n];
  return p;
}

char* write_by_type(char* p, const FieldLayout& field, const unsigned char* data);

// A nested struct, by type, as a JSON object.
char* write_record(char* p, const EventLayout& layout, const unsigned char* data) {
  *p++ = '{';
  bool first = true;
  for (const FieldLayout& member : layout.fields) {
    if (!first) *p++ = ',';
    first = false;
    p = json::write_key(p, member.name);
    p = write_by_type(p, member, data + member.offset);
  }
  *p++ = '}';
  return p;
}

char* write_scalar(char* p, const FieldLayout& field, const unsigned char* data) {
  switch (field.kind) {
    case ScalarKind::record:
      return write_record(p, *field.record, data);
    case ScalarKind::boolean: {
      const std::string_view text = data[0] ? "true" : "false";
      std::memcpy(p, text.data(), text.size());
      return p + text.size();
    }
    case ScalarKind::pointer:
      return json::write_hex_string(p, read_unsigned(data, 8));
    case ScalarKind::character:
    case ScalarKind::signed_int:
      if (field.element_size == 16) {
        __int128 v;
        std::memcpy(&v, data, 16);
        *p++ = '"';
        if (v < 0) {
          *p++ = '-';
          p = write_u128_digits(p, static_cast<unsigned __int128>(-(v + 1)) + 1);
        } else {
          p = write_u128_digits(p, static_cast<unsigned __int128>(v));
        }
        *p++ = '"';
        return p;
      }
      return json::write_int_exact(p, read_signed(data, field.element_size));
    case ScalarKind::unsigned_int:
      if (field.element_size == 16) {
        unsigned __int128 v;
        std::memcpy(&v, data, 16);
        *p++ = '"';
        p = write_u128_digits(p, v);
        *p++ = '"';
        return p;
      }
      return json::write_uint_exact(p, read_unsigned(data, field.element_size));
  }
  return p;
}

char* write_char_array(char* p, const FieldLayout& field, const unsigned char* data) {
  const size_t length = strnlen(reinterpret_cast<const char*>(data), field.count);
  return json::write_string(p, std::string_view(reinterpret_cast<const char*>(data), length));
}

// A member printed by its C type: scalars, char arrays as strings, other
// arrays as JSON arrays, nested structs as objects.
char* write_by_type(char* p, const FieldLayout& field, const unsigned char* data) {
  if (!field.is_array) return write_scalar(p, field, data);
  if (field.kind == ScalarKind::character) return write_char_array(p, field, data);
  *p++ = '[';
  for (size_t i = 0; i < field.count; ++i) {
    if (i > 0) *p++ = ',';
    p = write_scalar(p, field, data + i * field.element_size);
  }
  *p++ = ']';
  return p;
}

size_t max_by_type_chars(const FieldLayout& field);

size_t max_scalar_chars(const FieldLayout& field) {
  switch (field.kind) {
    case ScalarKind::record: {
      size_t n = 2;  // braces
      for (const FieldLayout& member : field.record->fields) {
        n += 1 + json::max_key_chars(member.name) + max_by_type_chars(member);  // comma, key, value
      }
      return n;
    }
    case ScalarKind::boolean: return 5;
    case ScalarKind::pointer: return json::kMaxHexStringChars;
    default: return field.element_size == 16 ? kMaxInt128StringChars : json::kMaxExactIntChars;
  }
}

// The most characters write_by_type() can produce for `field`.
size_t max_by_type_chars(const FieldLayout& field) {
  if (!field.is_array) return max_scalar_chars(field);
  if (field.kind == ScalarKind::character) return json::max_string_chars(field.count);
  return 2 + field.count * (1 + max_scalar_chars(field));
}

bool is_negative(const FieldLayout& field, const unsigned char* p) {
  return (field.kind == ScalarKind::signed_int || field.kind == ScalarKind::character) &&
         read_signed(p, field.element_size) < 0;
}

// An integer without a name (tcp_state, enum): its value as the C type reads
// it, as a string so the member's JSON type does not vary.
char* write_number_string(char* p, const FieldLayout& field, const unsigned char* data) {
  *p++ = '"';
  p = is_negative(field, data) ? json::write_int(p, read_signed(data, field.element_size))
                               : json::write_uint(p, read_unsigned(data, field.element_size));
  *p++ = '"';
  return p;
}

char* write_name(char* p, std::string_view quoted_name) {
  std::memcpy(p, quoted_name.data(), quoted_name.size());
  return p + quoted_name.size();
}

// The longest name a lookup table gives for any value below `limit`.
size_t longest_name(std::string_view (*name_of)(uint64_t), uint64_t limit) {
  size_t longest = 0;
  for (uint64_t value = 0; value < limit; ++value) longest = std::max(longest, name_of(value).size());
  return longest;
}

bool all_zero(const unsigned char* p, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

bool is_integer(const FieldLayout& field) {
  return !field.is_array && field.element_size <= 8 &&
         (field.kind == ScalarKind::unsigned_int || field.kind == ScalarKind::signed_int ||
          field.kind == ScalarKind::character || field.kind == ScalarKind::pointer);
}

}  // namespace

Result<EventDecoder> EventDecoder::make(EventLayout layout, const std::vector<FormatHint>& hints,
                                        const std::string& table_name, DecoderOptions options,
                                        const WallClock& clock) {
  EventDecoder decoder(std::move(layout), std::move(options), clock);
  const EventLayout& fields = decoder.layout_;

  decoder.prefix_ = "{";
  if (!decoder.options_.event_name.empty()) {
    json::append_key(decoder.prefix_, "event");
    json::append_string(decoder.prefix_, decoder.options_.event_name);
    decoder.prefix_.push_back(',');
  }
  if (const FieldLayout* ts = fields.find("ts_us"); ts && is_integer(*ts) && ts->element_size == 8) {
    decoder.ts_us_offset_ = ts->offset;
  }

  // The host's own keys must stay unique in every line.
  for (const FieldLayout& field : fields.fields) {
    if ((field.name == "time" && decoder.options_.add_time) ||
        (field.name == "event" && !decoder.options_.event_name.empty())) {
      return runtime_error("table '" + table_name + "': member '" + field.name +
                           "' would clash with the field the host adds under that name; rename it");
    }
  }

  for (const FieldLayout& field : fields.fields) {
    FieldPlan plan;
    plan.field = field;
    // A scalar unsigned char is a number like u8: read it unsigned (200, not
    // -56). Arrays of it stay strings, as kind `character` says.
    if (field.kind == ScalarKind::character && !field.is_array &&
        field.type.find("unsigned") != std::string::npos) {
      plan.field.kind = ScalarKind::unsigned_int;
    }
    plan.key.clear();
    json::append_key(plan.key, field.name);
    for (const FormatHint& hint : hints) {
      if (hint.field != field.name || (!hint.table.empty() && hint.table != table_name)) continue;
      auto reject = [&](const char* why) {
        return runtime_error("format hint " + field.name + " on table '" + table_name + "': field of type '" +
                             field.type + "' " + why);
      };
      switch (hint.format) {
        case FieldFormat::ip_address: {
          const bool fits = field.size() == 4 || field.size() >= 16;
          if (!fits) return reject("is not 4 or 16 bytes wide, so it cannot hold an IP address");
          const FieldLayout* family = fields.find(hint.arguments.at(0));
          if (family == nullptr || !is_integer(*family)) {
            return runtime_error("format hint " + field.name + "=ip(" + hint.arguments.at(0) +
                                 ") on table '" + table_name + "': no integer field '" +
                                 hint.arguments.at(0) + "' holds the address family");
          }
          plan.family = *family;
          break;
        }
        case FieldFormat::hex:
        case FieldFormat::tcp_state:
        case FieldFormat::errno_name:
        case FieldFormat::enumeration:
          if (!is_integer(field)) return reject("is not a single integer");
          break;
        case FieldFormat::string:
          if (!field.is_array || field.element_size != 1) return reject("is not a byte array");
          break;
        case FieldFormat::by_type:
          break;
      }
      if (hint.null_when_zero) {
        // A modifier: the field keeps the format its other hints give it.
        plan.null_when_zero = true;
        continue;
      }
      plan.format = hint.format;
      if (hint.format == FieldFormat::enumeration) {
        // Rendered (quoted, escaped) once here instead of for every event.
        plan.enum_names.clear();
        for (const std::string& name : hint.arguments) {
          plan.enum_names.emplace_back();
          json::append_string(plan.enum_names.back(), name);
        }
      }
    }
    plan.plain_integer = plan.format == FieldFormat::by_type && !plan.field.is_array &&
                         plan.field.element_size <= 8 &&
                         (plan.field.kind == ScalarKind::unsigned_int || plan.field.kind == ScalarKind::signed_int);
    const size_t value_chars = std::max(max_field_chars(plan), plan.null_when_zero ? size_t{4} : size_t{0});
    decoder.max_line_chars_ += plan.key.size() + value_chars + 1;  // key, value, comma
    decoder.plans_.push_back(std::move(plan));
  }
  decoder.max_line_chars_ += decoder.prefix_.size() + 2;  // "}\n" (or "{}\n")
  if (decoder.options_.add_time) decoder.max_line_chars_ += json::max_key_chars("time") + WallClock::kMaxRfc3339Chars + 1;
  return decoder;
}

size_t EventDecoder::max_field_chars(const FieldPlan& plan) {
  const FieldLayout& field = plan.field;
  switch (plan.format) {
    case FieldFormat::ip_address: return json::kMaxIpv6StringChars;
    case FieldFormat::hex: return json::kMaxHexStringChars;
    case FieldFormat::tcp_state: {
      static const size_t longest = longest_name(tcp_state_name, 256);
      return std::max(longest + 2, json::kMaxExactIntChars);
    }
    case FieldFormat::errno_name: {
      static const size_t longest = longest_name(errno_name, 4096);
      return std::max(longest + 2, json::kMaxExactIntChars);
    }
    case FieldFormat::enumeration: {
      size_t longest = json::kMaxExactIntChars;
      for (const std::string& name : plan.enum_names) longest = std::max(longest, name.size());
      return longest;
    }
    case FieldFormat::string: return json::max_string_chars(field.count);
    case FieldFormat::by_type: break;
  }
  return max_by_type_chars(field);
}

bool EventDecoder::append_json(std::string& out, const void* data, size_t size) const {
  if (size < layout_.size) return false;
  const auto* bytes = static_cast<const unsigned char*>(data);
  // Room for the worst case once (computed in make()), then plain pointer
  // writes: a capacity check per fragment cost more than the formatting.
  const size_t start = out.size();
  out.resize(start + max_line_chars_);
  char* p = out.data() + start;
  std::memcpy(p, prefix_.data(), prefix_.size());
  p += prefix_.size();
  if (options_.add_time) {
    p = json::write_key(p, "time");
    p = ts_us_offset_ ? clock_->write_rfc3339_from_monotonic_us(p, read_unsigned(bytes + *ts_us_offset_, 8))
                      : clock_->write_rfc3339_now(p);
    *p++ = ',';
  }
  for (const FieldPlan& plan : plans_) {
    std::memcpy(p, plan.key.data(), plan.key.size());
    p += plan.key.size();
    p = write_field(p, plan, bytes);
    *p++ = ',';
  }
  if (p[-1] == ',') {
    p[-1] = '}';
  } else {
    *p++ = '}';  // a struct with no members, without time
  }
  *p++ = '\n';
  out.resize(static_cast<size_t>(p - out.data()));
  return true;
}

char* EventDecoder::write_field(char* p, const FieldPlan& plan, const unsigned char* data) const {
  const FieldLayout& field = plan.field;
  const unsigned char* value = data + field.offset;
  if (plan.null_when_zero && all_zero(value, field.size())) return write_name(p, "null");
  switch (plan.format) {
    case FieldFormat::ip_address: {
      const uint64_t family = read_unsigned(data + plan.family.offset, plan.family.element_size);
      const bool v6 = family == 6 || family == AF_INET6;
      const bool v4 = family == 4 || family == AF_INET;
      if (v6 && field.size() >= 16) return json::write_ipv6_string(p, value);
      if (v4 || (!v6 && field.size() == 4)) return json::write_ipv4_string(p, value);
      return write_name(p, "\"\"");
    }
    case FieldFormat::hex:
      return json::write_hex_string(p, read_unsigned(value, field.element_size));
    case FieldFormat::tcp_state: {
      std::string_view name;
      if (!is_negative(field, value)) name = tcp_state_name(read_unsigned(value, field.element_size));
      if (name.empty()) return write_number_string(p, field, value);
      // State names are plain capitals and underscores: nothing to escape.
      *p++ = '"';
      p = write_name(p, name);
      *p++ = '"';
      return p;
    }
    case FieldFormat::errno_name: {
      // Kernel code stores errors as -errno in signed fields; an unsigned
      // field holds a plain errno.
      const int64_t number = field.kind == ScalarKind::signed_int
                                 ? read_signed(value, field.element_size)
                                 : static_cast<int64_t>(read_unsigned(value, field.element_size) & INT64_MAX);
      // Negated in unsigned arithmetic: -INT64_MIN overflows.
      const uint64_t magnitude = number < 0 ? 0 - static_cast<uint64_t>(number) : static_cast<uint64_t>(number);
      const std::string_view name = errno_name(magnitude);
      return name.empty() ? json::write_int_exact(p, number) : json::write_string(p, name);
    }
    case FieldFormat::enumeration: {
      const uint64_t index = read_unsigned(value, field.element_size);
      if (!is_negative(field, value) && index < plan.enum_names.size()) return write_name(p, plan.enum_names[index]);
      return write_number_string(p, field, value);
    }
    case FieldFormat::string:
      return write_char_array(p, field, value);
    case FieldFormat::by_type:
      break;
  }
  // Most members of TCP events are plain integers: straight to the number
  // writer, without write_by_type()'s dispatch on arrays and kinds.
  if (plan.plain_integer) {
    return field.kind == ScalarKind::unsigned_int ? json::write_uint_exact(p, read_unsigned(value, field.element_size))
                                                  : json::write_int_exact(p, read_signed(value, field.element_size));
  }
  return write_by_type(p, field, value);
}

}  // namespace tcptrace
