// The encoding of a compile's result (compiled_object.h): round trips, the
// byte layout, and parse_object() holding any input to its checks.
#include "compiled_object.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace tcptrace {
namespace {

BpfInstruction insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  return BpfInstruction{code, static_cast<uint8_t>(dst | src << 4), off, imm};
}

// Two maps loaded by two functions, one of them twice, and a map with an
// output's field descriptions.
CompiledObject sample_object() {
  CompiledObject object;
  object.license = "GPL";
  object.kern_version = 0x060100;
  object.compiler_warnings = "states.bpf.c:12:5: warning: unused variable 'x'\n";
  ObjectMap events;
  events.name = "events";
  events.type = 4;  // BPF_MAP_TYPE_PERF_EVENT_ARRAY
  events.key_size = 4;
  events.value_size = 4;
  events.max_entries = 2;
  events.key_description = "\"int\"";
  events.value_description = "\"u32\"";
  events.field_descriptions = {"saddr#unsigned int", "dport#unsigned short", "comm#char[16]"};
  ObjectMap start;
  start.name = "start";
  start.type = 1;  // BPF_MAP_TYPE_HASH
  start.key_size = 8;
  start.value_size = 16;
  start.max_entries = 10240;
  start.flags = 1;
  start.key_description = "\"unsigned long long\"";
  start.value_description = "[\"info\",[[\"ts\",\"u64\"],[\"pid\",\"u32\"]],\"struct_packed\"]";
  ObjectMap empty_names;  // empty strings and a zero-size map still round-trip
  object.maps = {events, start, empty_names};

  ObjectFunction probe;
  probe.name = "kprobe__tcp_connect";
  probe.instructions = {
      insn(0xbf, 6, 1, 0, 0),          // r6 = r1
      insn(0x18, 1, 1, 0, 7),          // r1 = map fd (start), first half
      insn(0x00, 0, 0, 0, 0),          // second half
      insn(0x7b, 10, 6, -8, 0),        // *(u64 *)(r10 - 8) = r6
      insn(0x18, 2, 1, 0, 0),          // r2 = map fd (events)
      insn(0x00, 0, 0, 0, 0),          //
      insn(0xb7, 0, 0, 0, -2147483647 - 1),
      insn(0x95, 0, 0, 0, 0),          // exit
  };
  probe.map_references = {{1, 1}, {4, 0}};
  ObjectFunction ret;
  ret.name = "kretprobe__tcp_connect";
  ret.instructions = {insn(0x18, 1, 1, 0, 0), insn(0x00, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)};
  ret.map_references = {{0, 1}};
  ObjectFunction no_maps;
  no_maps.name = "no_maps";
  no_maps.instructions = {insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)};
  object.functions = {probe, ret, no_maps};
  return object;
}

// What every object parse_object() returns satisfies.
void expect_valid_references(const CompiledObject& object) {
  for (const ObjectFunction& function : object.functions) {
    for (const MapReference& reference : function.map_references) {
      ASSERT_LT(reference.instruction + size_t{1}, function.instructions.size());
      EXPECT_EQ(function.instructions[reference.instruction].code, kBpfLdImm64);
      EXPECT_LT(reference.map, object.maps.size());
    }
  }
}

void expect_error(const CompiledObject& object, const std::string& message) {
  SCOPED_TRACE(message);
  auto parsed = parse_object(serialize_object(object));
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().exit_code, ExitCode::runtime);
  EXPECT_EQ(parsed.error().message.rfind("compiled object: ", 0), 0u) << parsed.error().message;
  EXPECT_NE(parsed.error().message.find(message), std::string::npos) << parsed.error().message;
}

TEST(CompiledObject, InstructionIsTheKernelsEightBytes) {
  const BpfInstruction i = insn(0x18, 2, 1, -3, 42);
  EXPECT_EQ(i.dst_reg(), 2);
  EXPECT_EQ(i.src_reg(), 1);
  EXPECT_EQ(i.regs, 0x12);
}

TEST(CompiledObject, RoundTripsMapsFunctionsAndReferences) {
  const CompiledObject object = sample_object();
  auto parsed = parse_object(serialize_object(object));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(*parsed, object);
  EXPECT_EQ(parsed->functions[0].instructions[3].off, -8);
  EXPECT_EQ(parsed->functions[0].instructions[6].imm, -2147483647 - 1);

  auto empty = parse_object(serialize_object(CompiledObject{}));
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_EQ(*empty, CompiledObject{});
}

TEST(CompiledObject, EqualityComparesEveryField) {
  const CompiledObject object = sample_object();
  CompiledObject other = object;
  other.maps[0].field_descriptions[2] = "comm#char[15]";
  EXPECT_NE(other, object);
  other = object;
  other.functions[1].map_references[0].map = 0;
  EXPECT_NE(other, object);
  other = object;
  other.functions[0].instructions[0].regs = 0x61;
  EXPECT_NE(other, object);
  other = object;
  other.kern_version += 1;
  EXPECT_NE(other, object);
}

TEST(CompiledObject, EncodingIsLittleEndianAndLengthPrefixed) {
  CompiledObject object;
  object.license = "GPL";
  object.kern_version = 0x01020304;
  ObjectFunction function;
  function.name = "f";
  function.instructions = {insn(0x18, 1, 1, -2, 0x0a0b0c0d), insn(0, 0, 0, 0, 0)};
  function.map_references = {{0, 0}};
  object.maps.resize(1);
  object.functions = {function};
  const std::string bytes = serialize_object(object);
  const std::string expected_start = std::string("\x03\x00\x00\x00GPL\x04\x03\x02\x01\x01\x00\x00\x00", 15);
  EXPECT_EQ(bytes.substr(0, expected_start.size()), expected_start);
  const std::string expected_instruction("\x18\x11\xfe\xff\x0d\x0c\x0b\x0a", 8);
  EXPECT_NE(bytes.find(expected_instruction), std::string::npos);
}

TEST(CompiledObject, RefusesAReferencePastTheInstructions) {
  CompiledObject object = sample_object();
  object.functions[1].map_references[0].instruction = 3;
  expect_error(object,
               "function 'kretprobe__tcp_connect': map reference at instruction 3 is past its 3 instructions");
  object.functions[1].map_references[0].instruction = 0xffffffff;
  expect_error(object, "map reference at instruction 4294967295 is past its 3 instructions");
}

TEST(CompiledObject, RefusesAReferenceThatIsNotAnLdImm64) {
  CompiledObject object = sample_object();
  object.functions[0].map_references[0].instruction = 2;  // the second half
  expect_error(object, "map reference at instruction 2 is not an ld_imm64");
  object = sample_object();
  object.functions[0].instructions[1].code = 0x61;
  expect_error(object, "map reference at instruction 1 is not an ld_imm64");
}

TEST(CompiledObject, RefusesAnLdImm64WithoutItsSecondHalf) {
  CompiledObject object = sample_object();
  object.functions[1].instructions = {insn(0x95, 0, 0, 0, 0), insn(0x18, 1, 1, 0, 0)};
  object.functions[1].map_references = {{1, 0}};
  expect_error(object, "map reference at instruction 1 is an ld_imm64 without its second half");
}

TEST(CompiledObject, RefusesAReferenceToAMissingMap) {
  CompiledObject object = sample_object();
  object.functions[0].map_references[1].map = 3;
  expect_error(object, "map reference at instruction 4 names map 3 of 3");
  object.maps.clear();
  object.functions[0].map_references[1].map = 0;
  expect_error(object, "names map 1 of 0");
}

TEST(CompiledObject, RefusesTwoReferencesToOneInstruction) {
  CompiledObject object = sample_object();
  object.functions[0].map_references = {{4, 0}, {1, 1}, {4, 1}};
  expect_error(object, "function 'kprobe__tcp_connect': two map references at instruction 4");
}

TEST(CompiledObject, RefusesTrailingBytes) {
  auto parsed = parse_object(serialize_object(sample_object()) + '\0');
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("1 trailing bytes"), std::string::npos) << parsed.error().message;
}

TEST(CompiledObject, RefusesLengthsAndCountsBeyondTheInput) {
  // A license of 2^32 - 1 bytes in a 7-byte input.
  auto parsed = parse_object(std::string("\xff\xff\xff\xff" "GPL", 7));
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().message,
            "compiled object: truncated in license (4294967295 bytes needed, 3 remain) (at byte 4)");
  // 2^32 - 1 maps: refused before anything is allocated for them.
  parsed = parse_object(std::string("\0\0\0\0" "\0\0\0\0" "\xff\xff\xff\xff", 12));
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().message, "compiled object: maps count 4294967295 exceeds the remaining 0 bytes (at byte 12)");
  // As many instructions as there are bytes, not 8 times as many.
  CompiledObject object;
  object.functions.resize(1);
  object.functions[0].instructions.resize(2);
  std::string bytes = serialize_object(object);
  // The end: instruction count, 2 instructions, reference count, the
  // compiler warnings' length.
  const size_t count_at = bytes.size() - 4 - 4 - 16 - 4;
  bytes[count_at] = 4;
  parsed = parse_object(bytes);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message.find("instructions count 4 exceeds the remaining 24 bytes"), std::string::npos)
      << parsed.error().message;
}

TEST(CompiledObject, EveryTruncationIsAnError) {
  const std::string bytes = serialize_object(sample_object());
  for (size_t size = 0; size < bytes.size(); ++size) {
    auto parsed = parse_object(std::string_view(bytes).substr(0, size));
    EXPECT_FALSE(parsed.ok()) << "a prefix of " << size << " of " << bytes.size() << " bytes parsed";
  }
}

// The encoding has one form per object, so whatever a damaged input parses
// to must encode back to that input.
void expect_error_or_valid(const std::string& bytes) {
  auto parsed = parse_object(bytes);
  if (!parsed.ok()) {
    EXPECT_FALSE(parsed.error().message.empty());
    return;
  }
  expect_valid_references(*parsed);
  EXPECT_EQ(serialize_object(*parsed), bytes);
}

TEST(CompiledObject, EverySingleByteFlipIsAnErrorOrAValidObject) {
  const std::string bytes = serialize_object(sample_object());
  for (size_t at = 0; at < bytes.size(); ++at) {
    for (const int mask : {0x01, 0x10, 0x80, 0xff}) {
      SCOPED_TRACE("byte " + std::to_string(at) + " ^ " + std::to_string(mask));
      std::string damaged = bytes;
      damaged[at] = static_cast<char>(damaged[at] ^ mask);
      expect_error_or_valid(damaged);
    }
  }
}

TEST(CompiledObject, RandomDamageIsAnErrorOrAValidObject) {
  const std::string bytes = serialize_object(sample_object());
  std::mt19937 random(19);
  for (int round = 0; round < 3000; ++round) {
    std::string damaged = bytes.substr(0, std::uniform_int_distribution<size_t>(0, bytes.size())(random));
    const int flips = std::uniform_int_distribution<int>(1, 4)(random);
    for (int i = 0; i < flips && !damaged.empty(); ++i) {
      const size_t at = std::uniform_int_distribution<size_t>(0, damaged.size() - 1)(random);
      damaged[at] = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(random));
    }
    SCOPED_TRACE("round " + std::to_string(round));
    expect_error_or_valid(damaged);
  }
  for (int round = 0; round < 1000; ++round) {
    std::string noise(std::uniform_int_distribution<size_t>(0, 64)(random), '\0');
    for (char& c : noise) c = static_cast<char>(std::uniform_int_distribution<int>(0, 255)(random));
    expect_error_or_valid(noise);
  }
}

}  // namespace
}  // namespace tcptrace
