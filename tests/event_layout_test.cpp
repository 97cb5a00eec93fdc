#include "event_layout.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tcptrace {
namespace {

// ------------------------------------------------------ single descriptions

struct ScalarCase {
  const char* spelling;
  ScalarKind kind;
  size_t size;
};

void PrintTo(const ScalarCase& c, std::ostream* os) { *os << '"' << c.spelling << '"'; }

class ScalarSpelling : public ::testing::TestWithParam<ScalarCase> {};

TEST_P(ScalarSpelling, ParsesKindAndSize) {
  const ScalarCase& c = GetParam();
  const std::string description = std::string("field_1#") + c.spelling;
  auto field = parse_field_description(description);
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_EQ(field->name, "field_1");
  EXPECT_EQ(field->type, c.spelling);
  EXPECT_EQ(field->kind, c.kind);
  EXPECT_EQ(field->element_size, c.size);
  EXPECT_EQ(field->count, 1u);
  EXPECT_FALSE(field->is_array);
  EXPECT_EQ(field->size(), c.size);
  EXPECT_EQ(field->offset, 0u);
}

TEST_P(ScalarSpelling, ParsesAsArrayElement) {
  const ScalarCase& c = GetParam();
  auto field = parse_field_description(std::string("a#") + c.spelling + "[3]");
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_EQ(field->kind, c.kind);
  EXPECT_EQ(field->element_size, c.size);
  EXPECT_EQ(field->count, 3u);
  EXPECT_TRUE(field->is_array);
  EXPECT_EQ(field->size(), 3 * c.size);
}

constexpr ScalarKind U = ScalarKind::unsigned_int;
constexpr ScalarKind S = ScalarKind::signed_int;
constexpr ScalarKind B = ScalarKind::boolean;
constexpr ScalarKind C = ScalarKind::character;
constexpr ScalarKind P = ScalarKind::pointer;

INSTANTIATE_TEST_SUITE_P(
    AllSpellings, ScalarSpelling,
    ::testing::Values(
        ScalarCase{"u8", U, 1}, ScalarCase{"u16", U, 2}, ScalarCase{"u32", U, 4}, ScalarCase{"u64", U, 8},
        ScalarCase{"__u8", U, 1}, ScalarCase{"__u16", U, 2}, ScalarCase{"__u32", U, 4},
        ScalarCase{"__u64", U, 8}, ScalarCase{"__be16", U, 2}, ScalarCase{"__be32", U, 4},
        ScalarCase{"__be64", U, 8}, ScalarCase{"uint8_t", U, 1}, ScalarCase{"uint16_t", U, 2},
        ScalarCase{"uint32_t", U, 4}, ScalarCase{"uint64_t", U, 8}, ScalarCase{"s8", S, 1},
        ScalarCase{"s16", S, 2}, ScalarCase{"s32", S, 4}, ScalarCase{"s64", S, 8}, ScalarCase{"__s8", S, 1},
        ScalarCase{"__s16", S, 2}, ScalarCase{"__s32", S, 4}, ScalarCase{"__s64", S, 8},
        ScalarCase{"int8_t", S, 1}, ScalarCase{"int16_t", S, 2}, ScalarCase{"int32_t", S, 4},
        ScalarCase{"int64_t", S, 8}, ScalarCase{"char", C, 1}, ScalarCase{"signed char", C, 1},
        ScalarCase{"unsigned char", C, 1}, ScalarCase{"short", S, 2}, ScalarCase{"short int", S, 2},
        ScalarCase{"unsigned short", U, 2}, ScalarCase{"unsigned short int", U, 2}, ScalarCase{"int", S, 4},
        ScalarCase{"signed int", S, 4}, ScalarCase{"signed", S, 4}, ScalarCase{"unsigned int", U, 4},
        ScalarCase{"unsigned", U, 4}, ScalarCase{"long", S, 8}, ScalarCase{"long int", S, 8},
        ScalarCase{"unsigned long", U, 8}, ScalarCase{"unsigned long int", U, 8},
        ScalarCase{"long long", S, 8}, ScalarCase{"long long int", S, 8},
        ScalarCase{"unsigned long long", U, 8}, ScalarCase{"unsigned long long int", U, 8},
        ScalarCase{"size_t", U, 8}, ScalarCase{"ssize_t", S, 8}, ScalarCase{"pid_t", S, 4},
        ScalarCase{"uid_t", U, 4}, ScalarCase{"gid_t", U, 4}, ScalarCase{"_Bool", B, 1},
        ScalarCase{"bool", B, 1}, ScalarCase{"unsigned __int128", U, 16}, ScalarCase{"__int128", S, 16},
        ScalarCase{"__uint128_t", U, 16}, ScalarCase{"__int128_t", S, 16},
        // Pointers of any kind are 8 bytes on BPF.
        ScalarCase{"void *", P, 8}, ScalarCase{"struct sock *", P, 8}, ScalarCase{"char *", P, 8},
        ScalarCase{"const void *", P, 8}, ScalarCase{"u8 **", P, 8}, ScalarCase{"void*", P, 8},
        // Enums are int-sized.
        ScalarCase{"enum foo", S, 4}, ScalarCase{"enum tcp_state_t", S, 4},
        // Qualifiers do not change the layout.
        ScalarCase{"const u32", U, 4}, ScalarCase{"volatile u64", U, 8}, ScalarCase{"const volatile int", S, 4},
        ScalarCase{"const char", C, 1}));

TEST(ParseFieldDescription, CharArray) {
  auto field = parse_field_description("comm#char[16]");
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_EQ(field->name, "comm");
  EXPECT_EQ(field->type, "char[16]");
  EXPECT_EQ(field->kind, ScalarKind::character);
  EXPECT_EQ(field->element_size, 1u);
  EXPECT_EQ(field->count, 16u);
  EXPECT_TRUE(field->is_array);
  EXPECT_EQ(field->size(), 16u);
}

TEST(ParseFieldDescription, CharArrayWithSpaceBeforeBracket) {
  auto field = parse_field_description("comm#char [16]");
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_EQ(field->type, "char [16]");
  EXPECT_EQ(field->kind, ScalarKind::character);
  EXPECT_EQ(field->element_size, 1u);
  EXPECT_EQ(field->count, 16u);
  EXPECT_TRUE(field->is_array);
}

TEST(ParseFieldDescription, QualifiedCharArray) {
  auto field = parse_field_description("comm#const char[16]");
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_EQ(field->kind, ScalarKind::character);
  EXPECT_EQ(field->count, 16u);
  EXPECT_EQ(field->size(), 16u);
  auto spaced = parse_field_description("comm#const char [16]");
  ASSERT_TRUE(spaced.ok()) << spaced.error().message;
  EXPECT_EQ(spaced->size(), 16u);
}

TEST(ParseFieldDescription, IntegerArray) {
  auto field = parse_field_description("addr#u32[4]");
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_EQ(field->kind, ScalarKind::unsigned_int);
  EXPECT_EQ(field->element_size, 4u);
  EXPECT_EQ(field->count, 4u);
  EXPECT_TRUE(field->is_array);
  EXPECT_EQ(field->size(), 16u);
}

TEST(ParseFieldDescription, TwoDimensionalArrayMultipliesDimensions) {
  auto field = parse_field_description("m#u8[2][3]");
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_EQ(field->count, 6u);
  EXPECT_EQ(field->size(), 6u);
  EXPECT_TRUE(field->is_array);

  auto spaced = parse_field_description("m#u16 [2] [3] [4]");
  ASSERT_TRUE(spaced.ok()) << spaced.error().message;
  EXPECT_EQ(spaced->count, 24u);
  EXPECT_EQ(spaced->size(), 48u);

  auto inner_spaces = parse_field_description("m#u8[ 5 ]");
  ASSERT_TRUE(inner_spaces.ok()) << inner_spaces.error().message;
  EXPECT_EQ(inner_spaces->count, 5u);
}

TEST(ParseFieldDescription, ArrayOfOneIsStillAnArray) {
  auto field = parse_field_description("x#u32[1]");
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_TRUE(field->is_array);
  EXPECT_EQ(field->count, 1u);
}

TEST(ParseFieldDescription, SurroundingSpacesInTypeAreIgnored) {
  auto field = parse_field_description("x#  u16  ");
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_EQ(field->element_size, 2u);
  EXPECT_EQ(field->kind, ScalarKind::unsigned_int);
}

TEST(ParseFieldDescription, PointerArray) {
  auto field = parse_field_description("stack#void *[4]");
  ASSERT_TRUE(field.ok()) << field.error().message;
  EXPECT_EQ(field->kind, ScalarKind::pointer);
  EXPECT_EQ(field->element_size, 8u);
  EXPECT_EQ(field->count, 4u);
}

class BadDescription : public ::testing::TestWithParam<const char*> {};

TEST_P(BadDescription, IsRejected) {
  auto field = parse_field_description(GetParam());
  ASSERT_FALSE(field.ok()) << GetParam();
  EXPECT_EQ(field.error().exit_code, ExitCode::runtime);
  EXPECT_FALSE(field.error().message.empty());
}

INSTANTIATE_TEST_SUITE_P(Errors, BadDescription,
                         ::testing::Values("x#struct (anonymous at /virtual/main.c:3:5)", "no_hash_here", "",
                                           "#u8", "x#", "x#u8[]", "x#u8[abc]", "x#u8[0]", "x#u8[-1]",
                                           "x#u8[4", "x#u8[4]x", "x#u8[4]]", "x#u8[2][]", "x#u8[0x10]",
                                           "x#float", "x#double", "x#long double", "x#u24",
                                           "x#unsigned __int256"));

TEST(ParseFieldDescription, NestedStructsAreRecordsToResolve) {
  for (const char* description : {"x#struct foo", "x#struct foo[2]", "x#union u"}) {
    auto field = parse_field_description(description);
    ASSERT_TRUE(field.ok()) << description;
    EXPECT_EQ(field->kind, ScalarKind::record) << description;
    EXPECT_EQ(field->record, nullptr) << description;
  }
  EXPECT_EQ(parse_field_description("x#struct foo[2]")->record_type, "struct foo");
  EXPECT_EQ(parse_field_description("x#struct foo[2]")->count, 2u);
  EXPECT_EQ(record_types_used({"a#u8", "b#struct foo", "c#struct bar[2]", "d#struct foo"}),
            (std::vector<std::string>{"struct foo", "struct bar"}));
}

TEST(ParseFieldDescription, ErrorsNameTheFieldAndType) {
  auto unknown = parse_event_layout({"sk#struct foo"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message.find("'sk'"), std::string::npos) << unknown.error().message;
  EXPECT_NE(unknown.error().message.find("struct foo"), std::string::npos) << unknown.error().message;

  auto malformed = parse_field_description("no_hash_here");
  ASSERT_FALSE(malformed.ok());
  EXPECT_NE(malformed.error().message.find("no_hash_here"), std::string::npos) << malformed.error().message;

  auto length = parse_field_description("buf#u8[abc]");
  ASSERT_FALSE(length.ok());
  EXPECT_NE(length.error().message.find("'buf'"), std::string::npos) << length.error().message;
  EXPECT_NE(length.error().message.find("u8[abc]"), std::string::npos) << length.error().message;

  auto empty_length = parse_field_description("x#u8[]");
  ASSERT_FALSE(empty_length.ok());
  EXPECT_NE(empty_length.error().message.find("u8[]"), std::string::npos) << empty_length.error().message;
}

TEST(ParseFieldDescription, OnlyTheFirstHashSeparates) {
  // Names never contain '#', so everything after the first one is the type.
  auto field = parse_field_description("x#u8#u16");
  EXPECT_FALSE(field.ok());
}

// ------------------------------------------------------------ whole structs

Result<EventLayout> layout_of(std::vector<std::string> descriptions) {
  return parse_event_layout(descriptions);
}

std::vector<size_t> offsets(const EventLayout& layout) {
  std::vector<size_t> result;
  for (const auto& f : layout.fields) result.push_back(f.offset);
  return result;
}

TEST(ParseEventLayout, PadsToNaturalAlignment) {
  auto layout = layout_of({"a#u8", "b#u32", "c#u16"});
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_EQ(offsets(*layout), (std::vector<size_t>{0, 4, 8}));
  EXPECT_EQ(layout->size, 12u);
  EXPECT_EQ(layout->alignment, 4u);
  ASSERT_EQ(layout->fields.size(), 3u);
  EXPECT_EQ(layout->fields[0].name, "a");
  EXPECT_EQ(layout->fields[1].name, "b");
  EXPECT_EQ(layout->fields[2].name, "c");

  struct Mirror {
    uint8_t a;
    uint32_t b;
    uint16_t c;
  };
  EXPECT_EQ(layout->size, sizeof(Mirror));
  EXPECT_EQ(layout->fields[1].offset, offsetof(Mirror, b));
  EXPECT_EQ(layout->fields[2].offset, offsetof(Mirror, c));
}

TEST(ParseEventLayout, TailPaddingToLargestAlignment) {
  auto layout = layout_of({"ts#u64", "x#u8"});
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_EQ(offsets(*layout), (std::vector<size_t>{0, 8}));
  EXPECT_EQ(layout->size, 16u);
  EXPECT_EQ(layout->alignment, 8u);
}

TEST(ParseEventLayout, OnlyBytesNeedNoPadding) {
  auto layout = layout_of({"a#u8", "c#char[3]", "b#u8"});
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_EQ(offsets(*layout), (std::vector<size_t>{0, 1, 4}));
  EXPECT_EQ(layout->size, 5u);
  EXPECT_EQ(layout->alignment, 1u);
}

TEST(ParseEventLayout, ArraysAlignToTheirElement) {
  auto layout = layout_of({"a#u8", "words#u32[4]", "b#u8", "halves#u16[3]"});
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_EQ(offsets(*layout), (std::vector<size_t>{0, 4, 20, 22}));
  EXPECT_EQ(layout->size, 28u);
  EXPECT_EQ(layout->alignment, 4u);  // not 16: the array aligns like u32
}

TEST(ParseEventLayout, PointersAndBoolsAndEnums) {
  auto layout = layout_of({"flag#bool", "sk#struct sock *", "kind#enum foo", "c#char"});
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_EQ(offsets(*layout), (std::vector<size_t>{0, 8, 16, 20}));
  EXPECT_EQ(layout->size, 24u);
  EXPECT_EQ(layout->alignment, 8u);
}

TEST(ParseEventLayout, Int128AlignsTo16) {
  auto layout = layout_of({"a#u8", "big#unsigned __int128", "b#u8"});
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_EQ(offsets(*layout), (std::vector<size_t>{0, 16, 32}));
  EXPECT_EQ(layout->size, 48u);
  EXPECT_EQ(layout->alignment, 16u);

  auto signed_layout = layout_of({"v#__int128", "x#u32"});
  ASSERT_TRUE(signed_layout.ok()) << signed_layout.error().message;
  EXPECT_EQ(signed_layout->size, 32u);
  EXPECT_EQ(signed_layout->alignment, 16u);
}

// programs/states.bpf.c, struct event:
//   u64 ts_us; u64 skaddr; u32 pid; char comm[16]; u16 family; u8 saddr[16];
//   u8 daddr[16]; u16 sport; u16 dport; u8 oldstate; u8 newstate; u64 delta_us;
const std::vector<std::string> kStatesEvent = {
    "ts_us#u64",      "skaddr#u64", "pid#u32",    "comm#char[16]", "family#u16",    "saddr#u8[16]",
    "daddr#u8[16]",   "sport#u16",  "dport#u16",  "oldstate#u8",   "newstate#u8",   "delta_us#u64",
};

struct StatesEventMirror {
  uint64_t ts_us;
  uint64_t skaddr;
  uint32_t pid;
  char comm[16];
  uint16_t family;
  uint8_t saddr[16];
  uint8_t daddr[16];
  uint16_t sport;
  uint16_t dport;
  uint8_t oldstate;
  uint8_t newstate;
  uint64_t delta_us;
};

TEST(ParseEventLayout, StatesProgramEvent) {
  auto layout = parse_event_layout(kStatesEvent);
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_EQ(offsets(*layout), (std::vector<size_t>{0, 8, 16, 20, 36, 38, 54, 70, 72, 74, 75, 80}));
  EXPECT_EQ(layout->size, 88u);
  EXPECT_EQ(layout->alignment, 8u);

  // The host compiler applies the same C rules on x86_64/arm64.
  EXPECT_EQ(layout->size, sizeof(StatesEventMirror));
  EXPECT_EQ(layout->find("pid")->offset, offsetof(StatesEventMirror, pid));
  EXPECT_EQ(layout->find("comm")->offset, offsetof(StatesEventMirror, comm));
  EXPECT_EQ(layout->find("family")->offset, offsetof(StatesEventMirror, family));
  EXPECT_EQ(layout->find("saddr")->offset, offsetof(StatesEventMirror, saddr));
  EXPECT_EQ(layout->find("daddr")->offset, offsetof(StatesEventMirror, daddr));
  EXPECT_EQ(layout->find("sport")->offset, offsetof(StatesEventMirror, sport));
  EXPECT_EQ(layout->find("dport")->offset, offsetof(StatesEventMirror, dport));
  EXPECT_EQ(layout->find("oldstate")->offset, offsetof(StatesEventMirror, oldstate));
  EXPECT_EQ(layout->find("newstate")->offset, offsetof(StatesEventMirror, newstate));
  EXPECT_EQ(layout->find("delta_us")->offset, offsetof(StatesEventMirror, delta_us));

  const FieldLayout* comm = layout->find("comm");
  ASSERT_NE(comm, nullptr);
  EXPECT_EQ(comm->kind, ScalarKind::character);
  EXPECT_EQ(comm->size(), 16u);
  const FieldLayout* saddr = layout->find("saddr");
  ASSERT_NE(saddr, nullptr);
  EXPECT_EQ(saddr->kind, ScalarKind::unsigned_int);
  EXPECT_EQ(saddr->count, 16u);
}

TEST(ParseEventLayout, FindReturnsNullForUnknownName) {
  auto layout = parse_event_layout(kStatesEvent);
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->find("nope"), nullptr);
  EXPECT_EQ(layout->find(""), nullptr);
  EXPECT_EQ(layout->find("ts"), nullptr);  // no prefix matching
  ASSERT_NE(layout->find("ts_us"), nullptr);
  EXPECT_EQ(layout->find("ts_us"), &layout->fields[0]);
}

TEST(ParseEventLayout, EmptyStructIsAnError) {
  auto layout = parse_event_layout({});
  ASSERT_FALSE(layout.ok());
  EXPECT_NE(layout.error().message.find("no fields"), std::string::npos) << layout.error().message;
}

TEST(ParseEventLayout, OneBadFieldFailsTheWholeStruct) {
  auto layout = layout_of({"a#u32", "sk#struct sock", "b#u8"});
  ASSERT_FALSE(layout.ok());
  EXPECT_NE(layout.error().message.find("'sk'"), std::string::npos) << layout.error().message;
}

TEST(ParseEventLayout, SingleFieldStruct) {
  auto layout = layout_of({"v#u16"});
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(layout->size, 2u);
  EXPECT_EQ(layout->alignment, 2u);
}

}  // namespace
}  // namespace tcptrace

namespace tcptrace {
namespace {

// BCC's own description of `struct outer { u64 ts; struct inner in; u16
// arr[3]; struct inner many[2]; u8 tail; }` with `struct inner { u8 a; u32
// b; char name[5]; }`, as libbcc 0.26 printed it here (bpf_table_leaf_desc).
constexpr const char* kOuterDescription =
    R"(["outer", [["ts","unsigned long long"], ["in",["inner", [["a","unsigned char"], ["__pad_1","char",[3]], )"
    R"(["b","unsigned int"], ["name","char", [5]], ["__pad_end","char",[3]] ], "struct_packed"]], )"
    R"(["arr","unsigned short", [3]], ["__pad_3","char",[2]], ["many",["inner", [["a","unsigned char"], )"
    R"(["__pad_1","char",[3]], ["b","unsigned int"], ["name","char", [5]], ["__pad_end","char",[3]] ], )"
    R"("struct_packed"], [2]], ["tail","unsigned char"], ["__pad_end","char",[7]] ], "struct_packed"])";

TEST(BccTypeDescription, NestedPackedLayoutMatchesTheCompiler) {
  struct Inner {
    uint8_t a;
    uint32_t b;
    char name[5];
  };
  struct Outer {
    uint64_t ts;
    Inner in;
    uint16_t arr[3];
    Inner many[2];
    uint8_t tail;
  };
  auto layout = layout_from_bcc_type_description(kOuterDescription);
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_EQ(layout->size, sizeof(Outer));
  ASSERT_EQ(layout->fields.size(), 5u);  // padding members dropped
  EXPECT_EQ(layout->find("in")->offset, offsetof(Outer, in));
  EXPECT_EQ(layout->find("arr")->offset, offsetof(Outer, arr));
  EXPECT_EQ(layout->find("many")->offset, offsetof(Outer, many));
  EXPECT_EQ(layout->find("many")->count, 2u);
  EXPECT_EQ(layout->find("many")->element_size, sizeof(Inner));
  EXPECT_EQ(layout->find("tail")->offset, offsetof(Outer, tail));
  const EventLayout& inner = *layout->find("in")->record;
  EXPECT_EQ(inner.size, sizeof(Inner));
  EXPECT_EQ(inner.find("b")->offset, offsetof(Inner, b));
  EXPECT_EQ(inner.find("name")->offset, offsetof(Inner, name));
  EXPECT_EQ(inner.find("a")->kind, ScalarKind::unsigned_int) << "unsigned char is a byte, not a character";
  EXPECT_EQ(inner.find("name")->kind, ScalarKind::character);
}

TEST(BccTypeDescription, ResolvesRecordFieldsOfAnEventLayout) {
  auto inner = layout_from_bcc_type_description(
      R"(["inner", [["a","unsigned char"], ["__pad_1","char",[3]], ["b","unsigned int"]], "struct_packed"])");
  ASSERT_TRUE(inner.ok());
  RecordLayouts records = {{"struct inner", std::make_shared<const EventLayout>(std::move(inner).value())}};
  auto layout = parse_event_layout({"flag#u8", "in#struct inner", "n#u8"}, records);
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  EXPECT_EQ(layout->find("in")->offset, 4u);  // aligned to inner's 4
  EXPECT_EQ(layout->find("n")->offset, 12u);
  EXPECT_EQ(layout->size, 16u);
}

TEST(BccTypeDescription, RejectsBitFieldsAndGarbage) {
  EXPECT_FALSE(layout_from_bcc_type_description("not json").ok());
  EXPECT_FALSE(layout_from_bcc_type_description(R"(["s", [["a","unsigned int", 3]], "struct"])").ok());
  EXPECT_FALSE(layout_from_bcc_type_description(R"(["s", [["a","float"]], "struct"])").ok());
  auto un = layout_from_bcc_type_description(R"(["u", [["a","unsigned int"], ["b","unsigned long long"]], "union"])");
  ASSERT_TRUE(un.ok());
  EXPECT_EQ(un->size, 8u);
  EXPECT_EQ(un->find("b")->offset, 0u);
}

}  // namespace
}  // namespace tcptrace
