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
#include <map>
#include <memory>
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
  record,  // a nested struct or union, laid out in FieldLayout::record
};

struct EventLayout;

struct FieldLayout {
  std::string name;
  std::string type;     // as BCC reported it, for --check and error messages
  ScalarKind kind = ScalarKind::unsigned_int;
  size_t element_size = 0;  // bytes of one element (scalar or record)
  size_t alignment = 1;     // of one element
  size_t count = 1;         // number of elements (all dimensions multiplied)
  bool is_array = false;
  size_t offset = 0;
  std::string record_type;                      // "struct inner" for records
  std::shared_ptr<const EventLayout> record;    // its layout, once known

  size_t size() const { return element_size * count; }
};

struct EventLayout {
  std::vector<FieldLayout> fields;
  size_t size = 0;  // sizeof(struct), including tail padding
  size_t alignment = 1;

  const FieldLayout* find(std::string_view name) const;
};

// Layouts of nested struct types by their C spelling ("struct inner").
using RecordLayouts = std::map<std::string, std::shared_ptr<const EventLayout>>;

// Parses one "name#type" description; exposed for tests. A nested struct
// comes back as a record field whose `record` is still empty.
Result<FieldLayout> parse_field_description(std::string_view description);

// Lays out a whole struct from its descriptions, in order. Record fields
// take their layout from `records`; one missing there is an error.
Result<EventLayout> parse_event_layout(const std::vector<std::string>& descriptions,
                                       const RecordLayouts& records = {});

// The nested struct types the descriptions use ("struct inner"), each once.
std::vector<std::string> record_types_used(const std::vector<std::string>& descriptions);

// BCC does not describe nested structs in perf_event_fields, but it does
// describe a map's value type completely, padding included, as JSON text:
//   ["inner", [["a","unsigned char"], ["__pad_1","char",[3]],
//              ["b","unsigned int"]], "struct_packed"]
// (bpf_table_leaf_desc). This turns such a description into a layout.
Result<EventLayout> layout_from_bcc_type_description(std::string_view description);

}  // namespace tcptrace
