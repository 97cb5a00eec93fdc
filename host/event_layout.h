// The layout of one output table's event struct, rebuilt from the field
// descriptions BCC records while it rewrites a program: for every struct
// passed to perf_submit()/ringbuf_output()/ringbuf_submit(), BCC keeps
// "member#type" strings in declaration order (BPFModule::perf_event_fields,
// e.g. "sport#u16", "comm#char[16]"). It records no offsets, so offsets are
// recomputed here with the C rules clang's BPF target uses: every member at
// the next multiple of its natural alignment, the struct padded to its
// largest alignment. A packed or explicitly aligned struct would decode wrong;
// see README "Writing your own probe".
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace tcptrace {

enum class ScalarKind {
  unsigned_int,
  signed_int,
  boolean,
  character,  // char / signed char / unsigned char spelled as characters
  pointer,
};

struct FieldLayout {
  std::string name;
  std::string type;     // as BCC reported it, for --check and error messages
  ScalarKind kind = ScalarKind::unsigned_int;
  size_t element_size = 0;  // bytes of one scalar (1, 2, 4, 8 or 16)
  size_t count = 1;         // number of elements (all dimensions multiplied)
  bool is_array = false;
  size_t offset = 0;

  size_t size() const { return element_size * count; }
};

struct EventLayout {
  std::vector<FieldLayout> fields;
  size_t size = 0;  // sizeof(struct), including tail padding
  size_t alignment = 1;

  const FieldLayout* find(std::string_view name) const;
};

// Parses one "name#type" description; exposed for tests.
Result<FieldLayout> parse_field_description(std::string_view description);

// Lays out a whole struct from its descriptions, in order.
Result<EventLayout> parse_event_layout(const std::vector<std::string>& descriptions);

}  // namespace tcptrace
