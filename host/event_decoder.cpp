#include "event_decoder.h"

#include <arpa/inet.h>
#include <sys/socket.h>

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
void append_u128(std::string& out, unsigned __int128 value) {
  char digits[40];
  size_t n = 0;
  do {
    digits[n++] = static_cast<char>('0' + static_cast<int>(value % 10));
    value /= 10;
  } while (value != 0);
  out.push_back('"');
  while (n > 0) out.push_back(digits[--n]);
  out.push_back('"');
}

void append_by_type(std::string& out, const FieldLayout& field, const unsigned char* p);

// A nested struct, by type, as a JSON object.
void append_record(std::string& out, const EventLayout& layout, const unsigned char* p) {
  out.push_back('{');
  bool first = true;
  for (const FieldLayout& member : layout.fields) {
    if (!first) out.push_back(',');
    first = false;
    json::append_key(out, member.name);
    append_by_type(out, member, p + member.offset);
  }
  out.push_back('}');
}

void append_scalar(std::string& out, const FieldLayout& field, const unsigned char* p) {
  switch (field.kind) {
    case ScalarKind::record:
      append_record(out, *field.record, p);
      return;
    case ScalarKind::boolean:
      out.append(p[0] ? "true" : "false");
      return;
    case ScalarKind::pointer:
      json::append_hex_string(out, read_unsigned(p, 8));
      return;
    case ScalarKind::character:
    case ScalarKind::signed_int:
      if (field.element_size == 16) {
        __int128 v;
        std::memcpy(&v, p, 16);
        if (v < 0) {
          out.append("\"-");
          std::string digits;
          append_u128(digits, static_cast<unsigned __int128>(-(v + 1)) + 1);
          out.append(digits, 1, std::string::npos);
        } else {
          append_u128(out, static_cast<unsigned __int128>(v));
        }
        return;
      }
      json::append_int_exact(out, read_signed(p, field.element_size));
      return;
    case ScalarKind::unsigned_int:
      if (field.element_size == 16) {
        unsigned __int128 v;
        std::memcpy(&v, p, 16);
        append_u128(out, v);
        return;
      }
      json::append_uint_exact(out, read_unsigned(p, field.element_size));
      return;
  }
}

// A member printed by its C type: scalars, char arrays as strings, other
// arrays as JSON arrays, nested structs as objects.
void append_by_type(std::string& out, const FieldLayout& field, const unsigned char* p) {
  if (!field.is_array) {
    append_scalar(out, field, p);
    return;
  }
  if (field.kind == ScalarKind::character) {
    const size_t length = strnlen(reinterpret_cast<const char*>(p), field.count);
    json::append_string(out, std::string_view(reinterpret_cast<const char*>(p), length));
    return;
  }
  out.push_back('[');
  for (size_t i = 0; i < field.count; ++i) {
    if (i > 0) out.push_back(',');
    append_scalar(out, field, p + i * field.element_size);
  }
  out.push_back(']');
}

bool is_negative(const FieldLayout& field, const unsigned char* p) {
  return (field.kind == ScalarKind::signed_int || field.kind == ScalarKind::character) &&
         read_signed(p, field.element_size) < 0;
}

// An integer without a name (tcp_state, enum): its value as the C type reads
// it, as a string so the member's JSON type does not vary.
void append_number_string(std::string& out, const FieldLayout& field, const unsigned char* p) {
  json::append_string(out, is_negative(field, p) ? std::to_string(read_signed(p, field.element_size))
                                                 : std::to_string(read_unsigned(p, field.element_size)));
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
    decoder.plans_.push_back(std::move(plan));
  }
  return decoder;
}

bool EventDecoder::append_json(std::string& out, const void* data, size_t size) const {
  if (size < layout_.size) return false;
  const auto* bytes = static_cast<const unsigned char*>(data);
  out.append(prefix_);
  if (options_.add_time) {
    json::append_key(out, "time");
    if (ts_us_offset_) {
      clock_->append_rfc3339_from_monotonic_us(out, read_unsigned(bytes + *ts_us_offset_, 8));
    } else {
      clock_->append_rfc3339_now(out);
    }
    out.push_back(',');
  }
  for (const FieldPlan& plan : plans_) {
    out.append(plan.key);
    append_field(out, plan, bytes);
    out.push_back(',');
  }
  if (out.back() == ',') {
    out.back() = '}';
  } else {
    out.push_back('}');  // a struct with no members, without time
  }
  out.push_back('\n');
  return true;
}

void EventDecoder::append_field(std::string& out, const FieldPlan& plan,
                                const unsigned char* data) const {
  const FieldLayout& field = plan.field;
  const unsigned char* p = data + field.offset;
  switch (plan.format) {
    case FieldFormat::ip_address: {
      const uint64_t family = read_unsigned(data + plan.family.offset, plan.family.element_size);
      const bool v6 = family == 6 || family == AF_INET6;
      const bool v4 = family == 4 || family == AF_INET;
      if (v6 && field.size() >= 16) {
        json::append_ipv6_string(out, p);
      } else if (v4 || (!v6 && field.size() == 4)) {
        json::append_ipv4_string(out, p);
      } else {
        out.append("\"\"");
      }
      return;
    }
    case FieldFormat::hex:
      json::append_hex_string(out, read_unsigned(p, field.element_size));
      return;
    case FieldFormat::tcp_state: {
      std::string_view name;
      if (!is_negative(field, p)) name = tcp_state_name(read_unsigned(p, field.element_size));
      if (name.empty()) {
        append_number_string(out, field, p);
      } else {
        // State names are plain capitals and underscores: nothing to escape.
        out.push_back('"');
        out.append(name);
        out.push_back('"');
      }
      return;
    }
    case FieldFormat::errno_name: {
      // Kernel code stores errors as -errno in signed fields; an unsigned
      // field holds a plain errno.
      const int64_t value = field.kind == ScalarKind::signed_int
                                ? read_signed(p, field.element_size)
                                : static_cast<int64_t>(read_unsigned(p, field.element_size) & INT64_MAX);
      // Negated in unsigned arithmetic: -INT64_MIN overflows.
      const uint64_t magnitude = value < 0 ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
      std::string_view name = errno_name(magnitude);
      if (name.empty()) {
        json::append_int_exact(out, value);
      } else {
        json::append_string(out, name);
      }
      return;
    }
    case FieldFormat::enumeration: {
      const uint64_t index = read_unsigned(p, field.element_size);
      if (!is_negative(field, p) && index < plan.enum_names.size()) {
        out.append(plan.enum_names[index]);
      } else {
        append_number_string(out, field, p);
      }
      return;
    }
    case FieldFormat::string:
    case FieldFormat::by_type:
      break;
  }
  if (plan.format == FieldFormat::string) {
    const size_t length = strnlen(reinterpret_cast<const char*>(p), field.count);
    json::append_string(out, std::string_view(reinterpret_cast<const char*>(p), length));
    return;
  }
  append_by_type(out, field, p);
}

}  // namespace tcptrace
