// The portable result of one BCC compile: what a later start needs to load
// the programs and create their maps without running the compiler
// (compile_cache.h keeps it on disk).
//
// serialize_object() and parse_object() use a little-endian, length-prefixed
// encoding (byte_codec.h). The bytes come from a file, so parse_object()
// trusts nothing in them: every length is held against what remains, and
// every map reference must name a real ld_imm64 and a real map, since the
// loader writes a map's fd into the instruction it names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "result.h"

namespace tcptrace {

// The 8 bytes of the kernel's struct bpf_insn. `regs` holds its two 4-bit
// register fields as the little-endian bitfield layout of linux/bpf.h does:
// dst_reg in the low nibble, src_reg in the high one.
struct BpfInstruction {
  uint8_t code = 0;
  uint8_t regs = 0;
  int16_t off = 0;
  int32_t imm = 0;

  uint8_t dst_reg() const { return regs & 0x0f; }
  uint8_t src_reg() const { return regs >> 4; }
  bool operator==(const BpfInstruction&) const = default;
};
static_assert(sizeof(BpfInstruction) == 8, "struct bpf_insn is 8 bytes");

// BPF_LD | BPF_IMM | BPF_DW: the first half of the two-instruction load of a
// 64-bit immediate, the one that loads a map's fd.
inline constexpr uint8_t kBpfLdImm64 = 0x18;

struct ObjectMap {
  std::string name;
  uint32_t type = 0;
  uint32_t key_size = 0;
  uint32_t value_size = 0;
  uint32_t max_entries = 0;
  uint32_t flags = 0;
  std::string key_description;    // BCC's JSON type description of the key
  std::string value_description;  // and of the value
  std::vector<std::string> field_descriptions;  // an output's fields, "name#type" each

  bool operator==(const ObjectMap&) const = default;
};

// The ld_imm64 at `instruction` loads the fd of maps[map].
struct MapReference {
  uint32_t instruction = 0;
  uint32_t map = 0;

  bool operator==(const MapReference&) const = default;
};

struct ObjectFunction {
  std::string name;
  std::vector<BpfInstruction> instructions;
  std::vector<MapReference> map_references;

  bool operator==(const ObjectFunction&) const = default;
};

struct CompiledObject {
  std::string license;
  uint32_t kern_version = 0;
  std::vector<ObjectMap> maps;
  std::vector<ObjectFunction> functions;
  // What the compile that made it printed about the program (clang's
  // warnings, already pointed at the user's file): a start that loads the
  // object prints it again, as that compile would have.
  std::string compiler_warnings;

  bool operator==(const CompiledObject&) const = default;
};

std::string serialize_object(const CompiledObject& object);

// Any input gives either an error (a runtime error starting "compiled
// object: ") or an object whose map references are all valid; trailing
// bytes are an error. Two references to one instruction are an error too:
// only one fd can be written there.
Result<CompiledObject> parse_object(std::string_view bytes);

}  // namespace tcptrace
