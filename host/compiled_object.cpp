#include "compiled_object.h"

#include <algorithm>

#include "byte_codec.h"

namespace tcptrace {

namespace {

// The fewest bytes each item can take, so a count that cannot fit in the
// remaining bytes is refused before anything is allocated for it.
constexpr size_t kMinStringBytes = 4;
constexpr size_t kMinMapBytes = kMinStringBytes + 5 * 4 + 2 * kMinStringBytes + 4;
constexpr size_t kInstructionBytes = 8;
constexpr size_t kMapReferenceBytes = 8;
constexpr size_t kMinFunctionBytes = kMinStringBytes + 4 + 4;

void write_map(ByteWriter& out, const ObjectMap& map) {
  out.string(map.name);
  out.u32(map.type);
  out.u32(map.key_size);
  out.u32(map.value_size);
  out.u32(map.max_entries);
  out.u32(map.flags);
  out.string(map.key_description);
  out.string(map.value_description);
  out.u32(static_cast<uint32_t>(map.field_descriptions.size()));
  for (const std::string& field : map.field_descriptions) out.string(field);
}

void write_function(ByteWriter& out, const ObjectFunction& function) {
  out.string(function.name);
  out.u32(static_cast<uint32_t>(function.instructions.size()));
  for (const BpfInstruction& insn : function.instructions) {
    out.integer(insn.code);
    out.integer(insn.regs);
    out.integer(insn.off);
    out.integer(insn.imm);
  }
  out.u32(static_cast<uint32_t>(function.map_references.size()));
  for (const MapReference& reference : function.map_references) {
    out.u32(reference.instruction);
    out.u32(reference.map);
  }
}

ObjectMap read_map(ByteReader& in) {
  ObjectMap map;
  map.name = in.string("map name");
  map.type = in.u32("map type");
  map.key_size = in.u32("map key size");
  map.value_size = in.u32("map value size");
  map.max_entries = in.u32("map max entries");
  map.flags = in.u32("map flags");
  map.key_description = in.string("map key description");
  map.value_description = in.string("map value description");
  const uint32_t fields = in.count("map field descriptions", kMinStringBytes);
  map.field_descriptions.reserve(fields);
  for (uint32_t i = 0; i < fields; ++i) map.field_descriptions.push_back(in.string("map field description"));
  return map;
}

ObjectFunction read_function(ByteReader& in) {
  ObjectFunction function;
  function.name = in.string("function name");
  const uint32_t instructions = in.count("instructions", kInstructionBytes);
  function.instructions.reserve(instructions);
  for (uint32_t i = 0; i < instructions; ++i) {
    BpfInstruction insn;
    insn.code = in.integer<uint8_t>("instruction");
    insn.regs = in.integer<uint8_t>("instruction");
    insn.off = in.integer<int16_t>("instruction");
    insn.imm = in.integer<int32_t>("instruction");
    function.instructions.push_back(insn);
  }
  const uint32_t references = in.count("map references", kMapReferenceBytes);
  function.map_references.reserve(references);
  for (uint32_t i = 0; i < references; ++i) {
    MapReference reference;
    reference.instruction = in.u32("map reference");
    reference.map = in.u32("map reference");
    function.map_references.push_back(reference);
  }
  return function;
}

// "" when every reference of `function` names the first half of an ld_imm64
// and an existing map, and no instruction is named twice.
std::string reference_error(const ObjectFunction& function, size_t map_count) {
  const auto& insns = function.instructions;
  std::vector<uint32_t> seen;
  seen.reserve(function.map_references.size());
  for (const MapReference& reference : function.map_references) {
    const std::string where =
        "function '" + function.name + "': map reference at instruction " + std::to_string(reference.instruction);
    if (reference.instruction >= insns.size()) {
      return where + " is past its " + std::to_string(insns.size()) + " instructions";
    }
    if (insns[reference.instruction].code != kBpfLdImm64) return where + " is not an ld_imm64";
    if (static_cast<size_t>(reference.instruction) + 1 >= insns.size()) {
      return where + " is an ld_imm64 without its second half";
    }
    if (reference.map >= map_count) {
      return where + " names map " + std::to_string(reference.map) + " of " + std::to_string(map_count);
    }
    seen.push_back(reference.instruction);
  }
  std::sort(seen.begin(), seen.end());
  if (auto twice = std::adjacent_find(seen.begin(), seen.end()); twice != seen.end()) {
    return "function '" + function.name + "': two map references at instruction " + std::to_string(*twice);
  }
  return "";
}

}  // namespace

std::string serialize_object(const CompiledObject& object) {
  ByteWriter out;
  out.string(object.license);
  out.u32(object.kern_version);
  out.u32(static_cast<uint32_t>(object.maps.size()));
  for (const ObjectMap& map : object.maps) write_map(out, map);
  out.u32(static_cast<uint32_t>(object.functions.size()));
  for (const ObjectFunction& function : object.functions) write_function(out, function);
  out.string(object.compiler_warnings);
  return std::move(out).take();
}

Result<CompiledObject> parse_object(std::string_view bytes) {
  ByteReader in(bytes, "compiled object");
  CompiledObject object;
  object.license = in.string("license");
  object.kern_version = in.u32("kernel version");
  const uint32_t maps = in.count("maps", kMinMapBytes);
  object.maps.reserve(maps);
  for (uint32_t i = 0; i < maps; ++i) object.maps.push_back(read_map(in));
  const uint32_t functions = in.count("functions", kMinFunctionBytes);
  object.functions.reserve(functions);
  for (uint32_t i = 0; i < functions; ++i) object.functions.push_back(read_function(in));
  object.compiler_warnings = in.string("compiler warnings");
  in.expect_end();
  if (in.failed()) return runtime_error(in.error());
  for (const ObjectFunction& function : object.functions) {
    if (std::string error = reference_error(function, object.maps.size()); !error.empty()) {
      return runtime_error("compiled object: " + error);
    }
  }
  return object;
}

}  // namespace tcptrace
