#include "event_decoder.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "event_layout.h"
#include "format_hints.h"
#include "wall_clock.h"

namespace tcptrace {
namespace {

using Json = nlohmann::ordered_json;

// CLOCK_REALTIME - CLOCK_MONOTONIC such that ts_us = 1'000'000 is
// 2026-11-21T22:50:41.123456Z (= 1795301441 s + 123456 µs since the epoch).
constexpr int64_t kOffsetNs = (int64_t{1795301441} * 1000000 + 123456 - 1000000) * 1000;
constexpr const char* kTsOneSecond = "2026-11-21T22:50:41.123456Z";

const WallClock& fixed_clock() {
  static const WallClock clock(kOffsetNs);
  return clock;
}

std::vector<FormatHint> hints_from(std::string_view source) {
  if (source.empty()) return {};
  auto hints = parse_format_hints(std::string("// tcptrace:format ") + std::string(source));
  EXPECT_TRUE(hints.ok()) << (hints.ok() ? "" : hints.error().message);
  return hints.ok() ? std::move(hints).value() : std::vector<FormatHint>{};
}

EventLayout layout_from(const std::vector<std::string>& descriptions) {
  auto layout = parse_event_layout(descriptions);
  EXPECT_TRUE(layout.ok()) << (layout.ok() ? "" : layout.error().message);
  return layout.ok() ? std::move(layout).value() : EventLayout{};
}

DecoderOptions no_time() {
  DecoderOptions options;
  options.add_time = false;
  return options;
}

Result<EventDecoder> make_decoder(const std::vector<std::string>& descriptions, std::string_view hints = "",
                                  DecoderOptions options = no_time(), const std::string& table = "events",
                                  const WallClock& clock = fixed_clock()) {
  return EventDecoder::make(layout_from(descriptions), hints_from(hints), table, std::move(options), clock);
}

// A zero-filled sample of the decoder's struct size, written field by field
// at the offsets the layout computed.
class Sample {
 public:
  explicit Sample(const EventLayout& layout) : layout_(layout), bytes_(layout.size, 0) {}

  template <class T>
  Sample& set(std::string_view name, T value) {
    const FieldLayout* field = layout_.find(name);
    EXPECT_NE(field, nullptr) << name;
    if (field == nullptr) return *this;
    EXPECT_EQ(sizeof(T), field->element_size) << name;
    EXPECT_LE(field->offset + sizeof(T), bytes_.size()) << name;
    std::memcpy(bytes_.data() + field->offset, &value, sizeof(T));
    return *this;
  }
  Sample& set_bytes(std::string_view name, std::string_view bytes) {
    const FieldLayout* field = layout_.find(name);
    EXPECT_NE(field, nullptr) << name;
    if (field == nullptr) return *this;
    EXPECT_LE(bytes.size(), field->size()) << name;
    std::memcpy(bytes_.data() + field->offset, bytes.data(), std::min(bytes.size(), field->size()));
    return *this;
  }
  const std::vector<unsigned char>& bytes() const { return bytes_; }

 private:
  const EventLayout& layout_;
  std::vector<unsigned char> bytes_;
};

// Decodes one sample and checks the framing every line must have.
std::string decode_line(const EventDecoder& decoder, const void* data, size_t size) {
  std::string out;
  EXPECT_TRUE(decoder.append_json(out, data, size));
  EXPECT_FALSE(out.empty());
  if (out.empty()) return out;
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  return out;
}
std::string decode_line(const EventDecoder& decoder, const Sample& sample) {
  return decode_line(decoder, sample.bytes().data(), sample.bytes().size());
}

Json parse_line(const std::string& line) {
  try {
    Json parsed = Json::parse(line);
    EXPECT_TRUE(parsed.is_object()) << line;
    return parsed;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "invalid JSON: " << line << " (" << e.what() << ")";
    return Json::object();
  }
}
Json decode(const EventDecoder& decoder, const Sample& sample) { return parse_line(decode_line(decoder, sample)); }

std::vector<std::string> keys(const Json& object) {
  std::vector<std::string> result;
  for (auto it = object.begin(); it != object.end(); ++it) result.push_back(it.key());
  return result;
}

std::string read_states_program() {
  const auto path = std::filesystem::path(__FILE__).parent_path().parent_path() / "programs" / "states.bpf.c";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const std::regex kRfc3339(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z)");

// ------------------------------------------------------------- wall clock

std::string rfc3339_realtime(const WallClock& clock, int64_t realtime_us) {
  std::string out;
  clock.append_rfc3339_realtime_us(out, realtime_us);
  return out;
}

TEST(WallClock, FormatsRealtimeMicroseconds) {
  const WallClock clock(0);
  EXPECT_EQ(rfc3339_realtime(clock, 0), "\"1970-01-01T00:00:00.000000Z\"");
  EXPECT_EQ(rfc3339_realtime(clock, 1), "\"1970-01-01T00:00:00.000001Z\"");
  EXPECT_EQ(rfc3339_realtime(clock, 999999), "\"1970-01-01T00:00:00.999999Z\"");
  EXPECT_EQ(rfc3339_realtime(clock, 1000000), "\"1970-01-01T00:00:01.000000Z\"");
  EXPECT_EQ(rfc3339_realtime(clock, 951782400000000), "\"2000-02-29T00:00:00.000000Z\"");
  EXPECT_EQ(rfc3339_realtime(clock, 1795301441123456), "\"2026-11-21T22:50:41.123456Z\"");
  EXPECT_EQ(rfc3339_realtime(clock, 253402300799999999), "\"9999-12-31T23:59:59.999999Z\"");
}

TEST(WallClock, NegativeTimesRoundTowardsThePast) {
  const WallClock clock(0);
  EXPECT_EQ(rfc3339_realtime(clock, -1), "\"1969-12-31T23:59:59.999999Z\"");
  EXPECT_EQ(rfc3339_realtime(clock, -1000000), "\"1969-12-31T23:59:59.000000Z\"");
  EXPECT_EQ(rfc3339_realtime(clock, -1000001), "\"1969-12-31T23:59:58.999999Z\"");
}

TEST(WallClock, CachedSecondIsInvalidatedWhenTheSecondChanges) {
  const WallClock clock(0);
  std::string out;
  clock.append_rfc3339_realtime_us(out, 1795301441123456);
  clock.append_rfc3339_realtime_us(out, 1795301441999999);
  clock.append_rfc3339_realtime_us(out, 1795305041000000);  // an hour later
  clock.append_rfc3339_realtime_us(out, 1795301441000001);  // and back
  clock.append_rfc3339_realtime_us(out, 1795387841000000);  // next day
  EXPECT_EQ(out,
            "\"2026-11-21T22:50:41.123456Z\"\"2026-11-21T22:50:41.999999Z\"\"2026-11-21T23:50:41.000000Z\""
            "\"2026-11-21T22:50:41.000001Z\"\"2026-11-22T22:50:41.000000Z\"");
}

TEST(WallClock, MonotonicPlusOffset) {
  std::string out;
  fixed_clock().append_rfc3339_from_monotonic_us(out, 1000000);
  EXPECT_EQ(out, std::string("\"") + kTsOneSecond + "\"");

  const WallClock behind(-1000000000);  // realtime one second behind monotonic
  std::string early;
  behind.append_rfc3339_from_monotonic_us(early, 5000000);
  EXPECT_EQ(early, "\"1970-01-01T00:00:04.000000Z\"");
}

TEST(WallClock, NowIsCurrent) {
  const WallClock clock;
  std::string out;
  clock.append_rfc3339_now(out);
  ASSERT_EQ(out.size(), 29u) << out;
  EXPECT_TRUE(std::regex_match(out.substr(1, 27), kRfc3339)) << out;
  EXPECT_GE(std::stoi(out.substr(1, 4)), 2024) << out;
}

TEST(WallClock, OutOfRangeYearsStillYieldAValidJsonString) {
  // Garbage in a ts_us member (or a program that stores nanoseconds there)
  // must not make the line invalid JSON: years beyond 9999 or before 0.
  const WallClock clock(0);
  for (int64_t us : {int64_t{253402300800000000}, int64_t{INT64_MAX}, int64_t{INT64_MIN}, int64_t{-62167219200000001},
                     int64_t{-62167219200000000}, int64_t{-30610224001000000}}) {
    std::string out;
    clock.append_rfc3339_realtime_us(out, us);
    Json parsed;
    ASSERT_NO_THROW(parsed = Json::parse(out)) << us << ": " << out;
    ASSERT_TRUE(parsed.is_string());
    const std::string text = parsed.get<std::string>();
    for (char c : text) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << us << ": " << out;
    EXPECT_EQ(text.back(), 'Z') << text;
  }
  EXPECT_EQ(rfc3339_realtime(clock, 253402300800000000), "\"10000-01-01T00:00:00.000000Z\"");
  // Years below 1000 keep four digits (glibc's %Y would print "999").
  EXPECT_EQ(rfc3339_realtime(clock, -30610224001000000), "\"0999-12-31T23:59:59.000000Z\"");
  EXPECT_EQ(rfc3339_realtime(clock, -62135596800000000), "\"0001-01-01T00:00:00.000000Z\"");
  for (uint64_t mono : {UINT64_MAX, uint64_t{INT64_MAX}, uint64_t{1} << 63}) {
    std::string out;
    fixed_clock().append_rfc3339_from_monotonic_us(out, mono);
    Json parsed;
    EXPECT_NO_THROW(parsed = Json::parse(out)) << mono << ": " << out;
  }
}

// --------------------------------------------------------- time and framing

TEST(EventDecoder, ExactLineForASimpleStruct) {
  auto decoder = make_decoder({"ts_us#u64", "pid#u32", "comm#char[16]"}, "", DecoderOptions{});
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<uint64_t>("ts_us", 1000000).set<uint32_t>("pid", 42).set_bytes("comm", "bash");
  EXPECT_EQ(decode_line(*decoder, sample),
            std::string("{\"time\":\"") + kTsOneSecond + "\",\"ts_us\":1000000,\"pid\":42,\"comm\":\"bash\"}\n");
}

TEST(EventDecoder, TimeFollowsTsUs) {
  auto decoder = make_decoder({"ts_us#u64"}, "", DecoderOptions{});
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  const std::vector<std::pair<uint64_t, std::string>> cases = {
      {1000000, "2026-11-21T22:50:41.123456Z"}, {1000001, "2026-11-21T22:50:41.123457Z"},
      {1876543, "2026-11-21T22:50:41.999999Z"}, {1876544, "2026-11-21T22:50:42.000000Z"},
      {0, "2026-11-21T22:50:40.123456Z"},       {3601000000, "2026-11-21T23:50:41.123456Z"},
      {1000000, "2026-11-21T22:50:41.123456Z"}, {86401000000, "2026-11-22T22:50:41.123456Z"},
  };
  for (const auto& [ts, expected] : cases) {
    Sample sample(decoder->layout());
    sample.set<uint64_t>("ts_us", ts);
    const Json line = decode(*decoder, sample);
    EXPECT_EQ(line.at("time"), expected) << ts;
    EXPECT_EQ(line.at("ts_us"), ts);
  }
}

TEST(EventDecoder, TimeIsNowWithoutAUsableTsUs) {
  const WallClock epoch_clock(0);  // ts_us would map into 1970
  for (const std::vector<std::string>& fields : {std::vector<std::string>{"pid#u32"},
                                                 std::vector<std::string>{"ts_us#u32"},
                                                 std::vector<std::string>{"ts_us#u64[2]"}}) {
    auto decoder = make_decoder(fields, "", DecoderOptions{}, "events", epoch_clock);
    ASSERT_TRUE(decoder.ok()) << decoder.error().message;
    Sample sample(decoder->layout());
    const Json line = decode(*decoder, sample);
    ASSERT_TRUE(line.contains("time")) << fields[0];
    const std::string time = line.at("time");
    EXPECT_TRUE(std::regex_match(time, kRfc3339)) << time;
    EXPECT_GE(std::stoi(time.substr(0, 4)), 2024) << fields[0] << " " << time;
    EXPECT_EQ(keys(line).front(), "time");
  }
}

TEST(EventDecoder, AddTimeFalseOmitsTime) {
  auto decoder = make_decoder({"ts_us#u64", "pid#u32"});
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<uint64_t>("ts_us", 5).set<uint32_t>("pid", 9);
  EXPECT_EQ(decode_line(*decoder, sample), "{\"ts_us\":5,\"pid\":9}\n");
}

TEST(EventDecoder, EventNameComesFirst) {
  DecoderOptions options;
  options.event_name = "connect";
  auto decoder = make_decoder({"ts_us#u64", "pid#u32"}, "", options);
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<uint64_t>("ts_us", 1000000).set<uint32_t>("pid", 7);
  const std::string line = decode_line(*decoder, sample);
  EXPECT_EQ(line, std::string("{\"event\":\"connect\",\"time\":\"") + kTsOneSecond + "\",\"ts_us\":1000000,\"pid\":7}\n");
  EXPECT_EQ(keys(parse_line(line)), (std::vector<std::string>{"event", "time", "ts_us", "pid"}));

  options.add_time = false;
  auto untimed = make_decoder({"pid#u32"}, "", options);
  ASSERT_TRUE(untimed.ok());
  Sample small(untimed->layout());
  small.set<uint32_t>("pid", 7);
  EXPECT_EQ(decode_line(*untimed, small), "{\"event\":\"connect\",\"pid\":7}\n");
}

TEST(EventDecoder, EventNameIsEscaped) {
  DecoderOptions options = no_time();
  options.event_name = "odd\"name\n";
  auto decoder = make_decoder({"pid#u32"}, "", options);
  ASSERT_TRUE(decoder.ok());
  Sample sample(decoder->layout());
  const Json line = decode(*decoder, sample);
  EXPECT_EQ(line.at("event"), "odd\"name\n");
}

TEST(EventDecoder, AppendsLinesToTheBuffer) {
  auto decoder = make_decoder({"pid#u32"});
  ASSERT_TRUE(decoder.ok());
  Sample a(decoder->layout());
  a.set<uint32_t>("pid", 1);
  Sample b(decoder->layout());
  b.set<uint32_t>("pid", 2);
  std::string out = "earlier\n";
  ASSERT_TRUE(decoder->append_json(out, a.bytes().data(), a.bytes().size()));
  ASSERT_TRUE(decoder->append_json(out, b.bytes().data(), b.bytes().size()));
  EXPECT_EQ(out, "earlier\n{\"pid\":1}\n{\"pid\":2}\n");
}

TEST(EventDecoder, TruncatedSampleAppendsNothing) {
  auto decoder = make_decoder({"ts_us#u64", "pid#u32"}, "", DecoderOptions{});
  ASSERT_TRUE(decoder.ok());
  ASSERT_EQ(decoder->layout().size, 16u);
  const std::vector<unsigned char> bytes(64, 0);
  std::string out = "prev";
  EXPECT_FALSE(decoder->append_json(out, bytes.data(), 15));
  EXPECT_FALSE(decoder->append_json(out, bytes.data(), 12));  // past the last field, short of the padding
  EXPECT_FALSE(decoder->append_json(out, bytes.data(), 1));
  EXPECT_FALSE(decoder->append_json(out, bytes.data(), 0));
  EXPECT_EQ(out, "prev");
  // A longer sample (perf buffers pad to 8 bytes) decodes from its start.
  EXPECT_TRUE(decoder->append_json(out, bytes.data(), 16));
  EXPECT_TRUE(decoder->append_json(out, bytes.data(), 64));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2);
}

// ------------------------------------------------------------ field types

struct AllTypes {
  uint8_t u8v;
  int8_t s8v;
  uint16_t u16v;
  int16_t s16v;
  uint32_t u32v;
  int32_t s32v;
  uint64_t u64v;
  int64_t s64v;
  bool flag;
  char name[8];
  uint8_t raw[4];
  uint32_t words[4];
  uint64_t ptr;  // void *
  unsigned __int128 big;
  __int128 neg;
  uint64_t huge;
  int8_t small[3];
  uint8_t grid[2][3];
  char c;
  unsigned char uc;
  int32_t kind;  // enum foo
  uint16_t tail;
};

const std::vector<std::string> kAllTypes = {
    "u8v#u8",   "s8v#s8",   "u16v#u16",     "s16v#s16",         "u32v#u32",      "s32v#s32",
    "u64v#u64", "s64v#s64", "flag#_Bool",   "name#char[8]",     "raw#u8[4]",     "words#u32[4]",
    "ptr#void *", "big#unsigned __int128", "neg#__int128", "huge#u64", "small#s8[3]", "grid#u8[2][3]",
    "c#char",   "uc#unsigned char", "kind#enum foo", "tail#u16",
};

std::vector<unsigned char> bytes_of(const AllTypes& v) {
  std::vector<unsigned char> bytes(sizeof v);
  std::memcpy(bytes.data(), &v, sizeof v);
  return bytes;
}

AllTypes zeroed() {
  AllTypes v;
  std::memset(&v, 0, sizeof v);
  return v;
}

TEST(EventDecoder, AllTypesLayoutMatchesTheCompiler) {
  const EventLayout layout = layout_from(kAllTypes);
  EXPECT_EQ(layout.size, sizeof(AllTypes));
  EXPECT_EQ(layout.find("s8v")->offset, offsetof(AllTypes, s8v));
  EXPECT_EQ(layout.find("u64v")->offset, offsetof(AllTypes, u64v));
  EXPECT_EQ(layout.find("flag")->offset, offsetof(AllTypes, flag));
  EXPECT_EQ(layout.find("name")->offset, offsetof(AllTypes, name));
  EXPECT_EQ(layout.find("raw")->offset, offsetof(AllTypes, raw));
  EXPECT_EQ(layout.find("words")->offset, offsetof(AllTypes, words));
  EXPECT_EQ(layout.find("ptr")->offset, offsetof(AllTypes, ptr));
  EXPECT_EQ(layout.find("big")->offset, offsetof(AllTypes, big));
  EXPECT_EQ(layout.find("neg")->offset, offsetof(AllTypes, neg));
  EXPECT_EQ(layout.find("huge")->offset, offsetof(AllTypes, huge));
  EXPECT_EQ(layout.find("small")->offset, offsetof(AllTypes, small));
  EXPECT_EQ(layout.find("grid")->offset, offsetof(AllTypes, grid));
  EXPECT_EQ(layout.find("c")->offset, offsetof(AllTypes, c));
  EXPECT_EQ(layout.find("uc")->offset, offsetof(AllTypes, uc));
  EXPECT_EQ(layout.find("kind")->offset, offsetof(AllTypes, kind));
  EXPECT_EQ(layout.find("tail")->offset, offsetof(AllTypes, tail));
}

TEST(EventDecoder, EveryFieldTypeExtremes) {
  auto decoder = make_decoder(kAllTypes);
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  ASSERT_EQ(decoder->layout().size, sizeof(AllTypes));
  AllTypes v = zeroed();
  v.u8v = 255;
  v.s8v = -128;
  v.u16v = 65535;
  v.s16v = -32768;
  v.u32v = 4294967295u;
  v.s32v = INT32_MIN;
  v.u64v = uint64_t{1} << 53;
  v.s64v = -(int64_t{1} << 53) - 1;
  v.flag = true;
  std::memcpy(v.name, "abc\0xyz", 8);
  const uint8_t raw[4] = {1, 2, 3, 255};
  std::memcpy(v.raw, raw, 4);
  const uint32_t words[4] = {0, 1, 4294967295u, 7};
  std::memcpy(v.words, words, sizeof words);
  v.ptr = 0xffff888100000000;
  v.big = ~static_cast<unsigned __int128>(0);
  v.neg = static_cast<__int128>(static_cast<unsigned __int128>(1) << 127);  // INT128_MIN
  v.huge = UINT64_MAX;
  v.small[0] = -1;
  v.small[1] = 0;
  v.small[2] = 1;
  const uint8_t grid[6] = {1, 2, 3, 4, 5, 6};
  std::memcpy(v.grid, grid, 6);
  v.c = -5;
  v.uc = 200;
  v.kind = -1;
  v.tail = 0xBEEF;

  const auto bytes = bytes_of(v);
  const std::string line = decode_line(*decoder, bytes.data(), bytes.size());
  const Json json = parse_line(line);
  EXPECT_EQ(keys(json), (std::vector<std::string>{"u8v", "s8v", "u16v", "s16v", "u32v", "s32v", "u64v", "s64v",
                                                  "flag", "name", "raw", "words", "ptr", "big", "neg", "huge",
                                                  "small", "grid", "c", "uc", "kind", "tail"}));
  EXPECT_EQ(json.at("u8v"), 255);
  EXPECT_EQ(json.at("s8v"), -128);
  EXPECT_EQ(json.at("u16v"), 65535);
  EXPECT_EQ(json.at("s16v"), -32768);
  EXPECT_EQ(json.at("u32v"), 4294967295u);
  EXPECT_EQ(json.at("s32v"), INT32_MIN);
  EXPECT_EQ(json.at("u64v"), 9007199254740992u);
  EXPECT_EQ(json.at("s64v"), "-9007199254740993");
  EXPECT_EQ(json.at("flag"), true);
  EXPECT_EQ(json.at("name"), "abc");
  EXPECT_EQ(json.at("raw"), Json::parse("[1,2,3,255]"));
  EXPECT_EQ(json.at("words"), Json::parse("[0,1,4294967295,7]"));
  EXPECT_EQ(json.at("ptr"), "0xffff888100000000");
  EXPECT_EQ(json.at("big"), "340282366920938463463374607431768211455");
  EXPECT_EQ(json.at("neg"), "-170141183460469231731687303715884105728");
  EXPECT_EQ(json.at("huge"), "18446744073709551615");
  EXPECT_EQ(json.at("small"), Json::parse("[-1,0,1]"));
  EXPECT_EQ(json.at("grid"), Json::parse("[1,2,3,4,5,6]"));
  EXPECT_EQ(json.at("c"), -5);
  EXPECT_EQ(json.at("uc"), 200);
  EXPECT_EQ(json.at("kind"), -1);
  EXPECT_EQ(json.at("tail"), 0xBEEF);

  // The raw text, where number-versus-string matters.
  EXPECT_NE(line.find("\"u64v\":9007199254740992,"), std::string::npos) << line;
  EXPECT_NE(line.find("\"s64v\":\"-9007199254740993\","), std::string::npos) << line;
  EXPECT_NE(line.find("\"huge\":\"18446744073709551615\","), std::string::npos) << line;
  EXPECT_NE(line.find("\"big\":\"340282366920938463463374607431768211455\","), std::string::npos) << line;
  EXPECT_NE(line.find("\"flag\":true,"), std::string::npos) << line;
}

TEST(EventDecoder, EveryFieldTypeSmallValues) {
  auto decoder = make_decoder(kAllTypes);
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  AllTypes v = zeroed();
  v.s8v = 127;
  v.s32v = -1;
  v.u64v = (uint64_t{1} << 53) + 1;
  v.s64v = -(int64_t{1} << 53);
  v.big = 12345;
  v.neg = -1;
  v.huge = 0;
  const auto bytes = bytes_of(v);
  Json json = parse_line(decode_line(*decoder, bytes.data(), bytes.size()));
  EXPECT_EQ(json.at("s8v"), 127);
  EXPECT_EQ(json.at("s32v"), -1);
  EXPECT_EQ(json.at("u64v"), "9007199254740993");
  EXPECT_EQ(json.at("s64v"), -9007199254740992);
  EXPECT_EQ(json.at("flag"), false);
  EXPECT_EQ(json.at("name"), "");
  EXPECT_EQ(json.at("ptr"), "0x0");
  EXPECT_EQ(json.at("big"), "12345");
  EXPECT_EQ(json.at("neg"), "-1");
  EXPECT_EQ(json.at("huge"), 0);

  v.neg = 0;
  v.big = 0;
  v.flag = true;
  reinterpret_cast<unsigned char&>(v.flag) = 2;  // any non-zero byte is true
  const auto more = bytes_of(v);
  json = parse_line(decode_line(*decoder, more.data(), more.size()));
  EXPECT_EQ(json.at("neg"), "0");
  EXPECT_EQ(json.at("big"), "0");
  EXPECT_EQ(json.at("flag"), true);
}

TEST(EventDecoder, SignedInt128Positive) {
  auto decoder = make_decoder({"v#__int128"});
  ASSERT_TRUE(decoder.ok());
  Sample sample(decoder->layout());
  sample.set<__int128>("v", static_cast<__int128>(~static_cast<unsigned __int128>(0) >> 1));  // INT128_MAX
  EXPECT_EQ(decode(*decoder, sample).at("v"), "170141183460469231731687303715884105727");
}

TEST(EventDecoder, CharArrayWithoutNulUsesTheFullLength) {
  auto decoder = make_decoder({"c#char[4]", "x#u32"});
  ASSERT_TRUE(decoder.ok());
  Sample sample(decoder->layout());
  sample.set_bytes("c", "abcd").set<uint32_t>("x", 0x41414141);  // "AAAA" right behind
  const std::string line = decode_line(*decoder, sample);
  EXPECT_EQ(line, "{\"c\":\"abcd\",\"x\":1094795585}\n");
}

TEST(EventDecoder, CharArrayStopsAtFirstNul) {
  auto decoder = make_decoder({"c#char[8]"});
  ASSERT_TRUE(decoder.ok());
  Sample sample(decoder->layout());
  sample.set_bytes("c", std::string_view("ab\0cd\0ef", 8));
  EXPECT_EQ(decode_line(*decoder, sample), "{\"c\":\"ab\"}\n");
  Sample empty(decoder->layout());
  EXPECT_EQ(decode_line(*decoder, empty), "{\"c\":\"\"}\n");
}

TEST(EventDecoder, UnsignedAndSignedCharArraysAreStrings) {
  auto decoder = make_decoder({"a#unsigned char[4]", "b#signed char[4]", "c#const char [4]"});
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set_bytes("a", "xy").set_bytes("b", "zw").set_bytes("c", "full");
  EXPECT_EQ(decode_line(*decoder, sample), "{\"a\":\"xy\",\"b\":\"zw\",\"c\":\"full\"}\n");
}

TEST(EventDecoder, StringHintOnByteArray) {
  auto decoder = make_decoder({"path#u8[8]", "raw#u8[3]"}, "path=string");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set_bytes("path", std::string_view("/tmp\0zz", 7)).set_bytes("raw", "ab");
  EXPECT_EQ(decode_line(*decoder, sample), "{\"path\":\"/tmp\",\"raw\":[97,98,0]}\n");
  Sample full(decoder->layout());
  full.set_bytes("path", "12345678");
  EXPECT_EQ(parse_line(decode_line(*decoder, full)).at("path"), "12345678");
}

TEST(EventDecoder, PointerArray) {
  auto decoder = make_decoder({"stack#void *[2]"});
  ASSERT_TRUE(decoder.ok());
  Sample sample(decoder->layout());
  const uint64_t frames[2] = {0xffffffff81000000, 0};
  sample.set_bytes("stack", std::string_view(reinterpret_cast<const char*>(frames), sizeof frames));
  EXPECT_EQ(decode_line(*decoder, sample), "{\"stack\":[\"0xffffffff81000000\",\"0x0\"]}\n");
}

// ------------------------------------------------------------------ hints

std::string v6_bytes(const char* text) {
  unsigned char buf[16];
  EXPECT_EQ(inet_pton(AF_INET6, text, buf), 1) << text;
  return std::string(reinterpret_cast<const char*>(buf), 16);
}
std::string v4_bytes(const char* text) {
  unsigned char buf[4];
  EXPECT_EQ(inet_pton(AF_INET, text, buf), 1) << text;
  return std::string(reinterpret_cast<const char*>(buf), 4);
}

struct IpCase {
  uint16_t family;
  std::string address_bytes;  // written into saddr (u8[16])
  std::string expected;
};

TEST(EventDecoderHints, IpOnSixteenByteArray) {
  auto decoder = make_decoder({"family#u16", "saddr#u8[16]"}, "saddr=ip(family)");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  const std::vector<IpCase> cases = {
      {4, v4_bytes("127.0.0.1"), "127.0.0.1"},
      {2, v4_bytes("10.1.2.3"), "10.1.2.3"},  // AF_INET
      {4, v4_bytes("255.255.255.255"), "255.255.255.255"},
      {4, v4_bytes("0.0.0.0"), "0.0.0.0"},
      {6, v6_bytes("::1"), "::1"},
      {10, v6_bytes("fe80::1"), "fe80::1"},  // AF_INET6
      {6, v6_bytes("::"), "::"},
      {6, v6_bytes("::ffff:192.0.2.1"), "::ffff:192.0.2.1"},
      {6, v6_bytes("2001:db8:85a3:0:0:8a2e:370:7334"), "2001:db8:85a3::8a2e:370:7334"},
      {6, v6_bytes("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1"},
      {10, v6_bytes("ff02::1:ff00:1"), "ff02::1:ff00:1"},
      {0, v6_bytes("fe80::1"), ""},  // unknown family: nothing to print
      {99, v4_bytes("1.2.3.4"), ""},
  };
  for (const auto& c : cases) {
    Sample sample(decoder->layout());
    sample.set<uint16_t>("family", c.family).set_bytes("saddr", c.address_bytes);
    const Json json = decode(*decoder, sample);
    EXPECT_EQ(json.at("saddr"), c.expected) << "family " << c.family;
    EXPECT_EQ(json.at("family"), c.family);
  }
}

TEST(EventDecoderHints, IpOnFourByteFields) {
  auto decoder = make_decoder({"af#u8", "a4#u32", "b4#u8[4]"}, "a4=ip(af) b4=ip(af)");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  for (uint8_t family : {uint8_t{4}, uint8_t{2}, uint8_t{0}}) {
    Sample sample(decoder->layout());
    sample.set<uint8_t>("af", family).set_bytes("a4", v4_bytes("192.168.1.2")).set_bytes("b4", v4_bytes("8.8.4.4"));
    const Json json = decode(*decoder, sample);
    EXPECT_EQ(json.at("a4"), "192.168.1.2") << int(family);  // memory order, as the kernel stores it
    EXPECT_EQ(json.at("b4"), "8.8.4.4") << int(family);
  }
  Sample v6(decoder->layout());
  v6.set<uint8_t>("af", 6).set_bytes("a4", v4_bytes("192.168.1.2"));
  EXPECT_EQ(decode(*decoder, v6).at("a4"), "");  // IPv6 does not fit in 4 bytes
}

TEST(EventDecoderHints, IpOnWordArraysAndInt128) {
  auto decoder = make_decoder({"family#u32", "w#u32[4]", "x#unsigned __int128"}, "w=ip x=ip");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<uint32_t>("family", 10).set_bytes("w", v6_bytes("2001:db8::1")).set_bytes("x", v6_bytes("::1"));
  Json json = decode(*decoder, sample);
  EXPECT_EQ(json.at("w"), "2001:db8::1");
  EXPECT_EQ(json.at("x"), "::1");
  Sample v4(decoder->layout());
  v4.set<uint32_t>("family", 2).set_bytes("w", v4_bytes("1.2.3.4"));
  json = decode(*decoder, v4);
  EXPECT_EQ(json.at("w"), "1.2.3.4");
}

TEST(EventDecoderHints, Hex) {
  auto decoder = make_decoder({"skaddr#u64", "zero#u16", "neg#s32", "b#u8", "p#void *"},
                              "skaddr=hex zero=hex neg=hex b=hex p=hex");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<uint64_t>("skaddr", 0xffff888100000000)
      .set<int32_t>("neg", -1)
      .set<uint8_t>("b", 0xab)
      .set<uint64_t>("p", 0x1234);
  EXPECT_EQ(decode_line(*decoder, sample),
            "{\"skaddr\":\"0xffff888100000000\",\"zero\":\"0x0\",\"neg\":\"0xffffffff\",\"b\":\"0xab\","
            "\"p\":\"0x1234\"}\n");
}

TEST(EventDecoderHints, TcpStateNames) {
  auto decoder = make_decoder({"state#u8"}, "state=tcp_state");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  const std::vector<std::string> names = {"ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1",    "FIN_WAIT2",
                                          "TIME_WAIT",   "CLOSE",    "CLOSE_WAIT", "LAST_ACK",   "LISTEN",
                                          "CLOSING",     "NEW_SYN_RECV", "BOUND_INACTIVE"};
  for (uint8_t state = 1; state <= 13; ++state) {
    Sample sample(decoder->layout());
    sample.set<uint8_t>("state", state);
    EXPECT_EQ(decode_line(*decoder, sample), "{\"state\":\"" + names[state - 1] + "\"}\n");
  }
  for (uint8_t state : {uint8_t{0}, uint8_t{14}, uint8_t{255}}) {
    Sample sample(decoder->layout());
    sample.set<uint8_t>("state", state);
    EXPECT_EQ(decode_line(*decoder, sample), "{\"state\":\"" + std::to_string(state) + "\"}\n");
  }
}

TEST(EventDecoderHints, TcpStateOnSignedFieldKeepsTheSign) {
  auto decoder = make_decoder({"state#int"}, "state=tcp_state");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<int32_t>("state", 7);
  EXPECT_EQ(decode(*decoder, sample).at("state"), "CLOSE");
  sample.set<int32_t>("state", -1);
  EXPECT_EQ(decode(*decoder, sample).at("state"), "-1");
}

TEST(EventDecoderHints, ErrnoNames) {
  auto decoder = make_decoder({"err#s32", "small#u8", "wide#s64"}, "err=errno small=errno wide=errno");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  struct Case {
    int32_t err;
    std::string expected_text;  // raw JSON text of the value
  };
  for (const Case& c : std::vector<Case>{{111, "\"ECONNREFUSED\""},
                                         {-111, "\"ECONNREFUSED\""},
                                         {110, "\"ETIMEDOUT\""},
                                         {-104, "\"ECONNRESET\""},
                                         {0, "0"},
                                         {9999, "9999"},
                                         {-9999, "-9999"},
                                         {INT32_MIN, "-2147483648"}}) {
    Sample sample(decoder->layout());
    sample.set<int32_t>("err", c.err).set<uint8_t>("small", 4).set<int64_t>("wide", 1000);
    EXPECT_EQ(decode_line(*decoder, sample),
              "{\"err\":" + c.expected_text + ",\"small\":\"EINTR\",\"wide\":1000}\n")
        << c.err;
  }
}

TEST(EventDecoderHints, ErrnoExtremeWideValuesStayExactAndValid) {
  auto decoder = make_decoder({"wide#s64"}, "wide=errno");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<int64_t>("wide", INT64_MIN);
  EXPECT_EQ(decode_line(*decoder, sample), "{\"wide\":\"-9223372036854775808\"}\n");
  sample.set<int64_t>("wide", int64_t{1} << 60);
  EXPECT_EQ(decode_line(*decoder, sample), "{\"wide\":\"1152921504606846976\"}\n");
  sample.set<int64_t>("wide", -111);
  EXPECT_EQ(decode_line(*decoder, sample), "{\"wide\":\"ECONNREFUSED\"}\n");
}

TEST(EventDecoderHints, EnumNames) {
  auto decoder = make_decoder({"outcome#u8"}, "outcome=enum(a,b,c)");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  const std::vector<std::pair<uint8_t, std::string>> cases = {{0, "a"}, {1, "b"}, {2, "c"}, {3, "3"}, {255, "255"}};
  for (const auto& [value, expected] : cases) {
    Sample sample(decoder->layout());
    sample.set<uint8_t>("outcome", value);
    EXPECT_EQ(decode_line(*decoder, sample), "{\"outcome\":\"" + expected + "\"}\n") << int(value);
  }
}

TEST(EventDecoderHints, EnumOnSignedFieldKeepsTheSign) {
  auto decoder = make_decoder({"kind#enum outcome", "big#u64"}, "kind=enum(ok,failed) big=enum(x)");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<int32_t>("kind", 1).set<uint64_t>("big", UINT64_MAX);
  Json json = decode(*decoder, sample);
  EXPECT_EQ(json.at("kind"), "failed");
  EXPECT_EQ(json.at("big"), "18446744073709551615");
  sample.set<int32_t>("kind", -1);
  EXPECT_EQ(decode(*decoder, sample).at("kind"), "-1");
}

TEST(EventDecoderHints, EnumNamesAreEscaped) {
  auto decoder = make_decoder({"k#u8"}, "k=enum(a\"b,c\\d)");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  EXPECT_EQ(decode(*decoder, sample).at("k"), "a\"b");
  sample.set<uint8_t>("k", 1);
  EXPECT_EQ(decode(*decoder, sample).at("k"), "c\\d");
}

// "optional": a value the program could not know (all bytes zero) is null,
// anything else is printed as the field's type or other hint says.
TEST(EventDecoderHints, OptionalFieldsAreNullWhenZero) {
  auto decoder = make_decoder({"pid#u32", "comm#char[16]", "family#u16", "saddr#u8[16]", "n#s64"},
                              "pid=optional comm=optional saddr=ip(family) saddr=optional n=optional");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample unknown(decoder->layout());
  unknown.set<uint16_t>("family", 4);
  EXPECT_EQ(decode_line(*decoder, unknown),
            "{\"pid\":null,\"comm\":null,\"family\":4,\"saddr\":null,\"n\":null}\n");
  Sample known(decoder->layout());
  known.set<uint32_t>("pid", 4242).set_bytes("comm", "nginx").set<uint16_t>("family", 4);
  known.set_bytes("saddr", v4_bytes("10.0.0.1")).set<int64_t>("n", -1);
  EXPECT_EQ(decode_line(*decoder, known),
            "{\"pid\":4242,\"comm\":\"nginx\",\"family\":4,\"saddr\":\"10.0.0.1\",\"n\":-1}\n");
  // One non-zero byte anywhere in the field is a value.
  Sample high_byte(decoder->layout());
  high_byte.set<uint32_t>("pid", 1u << 24);
  EXPECT_EQ(decode(*decoder, high_byte).at("pid"), 1 << 24);
}

TEST(EventDecoderHints, OptionalAloneKeepsTheFieldsOwnFormat) {
  auto decoder = make_decoder({"state#u8", "skaddr#u64"}, "state=optional state=tcp_state skaddr=hex skaddr=optional");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  EXPECT_EQ(decode_line(*decoder, sample), "{\"state\":null,\"skaddr\":null}\n");
  sample.set<uint8_t>("state", 10).set<uint64_t>("skaddr", 0xff);
  EXPECT_EQ(decode_line(*decoder, sample), "{\"state\":\"LISTEN\",\"skaddr\":\"0xff\"}\n");
}

TEST(EventDecoderHints, TablePrefixSelectsTheTable) {
  const std::vector<std::string> fields = {"family#u16", "saddr#u8[4]", "x#u32"};
  const std::string hints = "other.saddr=ip(family) events.x=hex";
  auto events = make_decoder(fields, hints, no_time(), "events");
  auto other = make_decoder(fields, hints, no_time(), "other");
  ASSERT_TRUE(events.ok()) << events.error().message;
  ASSERT_TRUE(other.ok()) << other.error().message;
  Sample sample(events->layout());
  sample.set<uint16_t>("family", 4).set_bytes("saddr", v4_bytes("10.0.0.1")).set<uint32_t>("x", 255);
  EXPECT_EQ(decode_line(*events, sample), "{\"family\":4,\"saddr\":[10,0,0,1],\"x\":\"0xff\"}\n");
  EXPECT_EQ(decode_line(*other, sample), "{\"family\":4,\"saddr\":\"10.0.0.1\",\"x\":255}\n");
}

TEST(EventDecoderHints, HintForAnotherTableIsNotValidated) {
  // port is a u16: ip would be rejected, but the hint is for another table.
  auto decoder = make_decoder({"family#u16", "port#u16"}, "other.port=ip", no_time(), "events");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
}

TEST(EventDecoderHints, HintForAbsentFieldIsIgnored) {
  auto decoder = make_decoder({"pid#u32"}, "saddr=ip(family) nothere=hex");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<uint32_t>("pid", 3);
  EXPECT_EQ(decode_line(*decoder, sample), "{\"pid\":3}\n");
}

struct RejectCase {
  std::vector<std::string> fields;
  const char* hints;
  const char* fragment;  // the message must contain it
};

void PrintTo(const RejectCase& c, std::ostream* os) { *os << c.hints; }

class RejectedHint : public ::testing::TestWithParam<RejectCase> {};

TEST_P(RejectedHint, AtMake) {
  const RejectCase& c = GetParam();
  auto decoder = make_decoder(c.fields, c.hints, no_time(), "events");
  ASSERT_FALSE(decoder.ok()) << c.hints;
  const std::string& message = decoder.error().message;
  EXPECT_EQ(decoder.error().exit_code, ExitCode::runtime);
  EXPECT_NE(message.find(c.fragment), std::string::npos) << message;
  EXPECT_NE(message.find("'events'"), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(
    Errors, RejectedHint,
    ::testing::Values(
        RejectCase{{"family#u16", "port#u16"}, "port=ip(family)", "not 4 or 16 bytes"},
        RejectCase{{"family#u16", "a#u64"}, "a=ip", "not 4 or 16 bytes"},
        RejectCase{{"family#u16", "a#u8[6]"}, "a=ip", "not 4 or 16 bytes"},
        RejectCase{{"saddr#u8[16]"}, "saddr=ip", "no integer field 'family'"},
        RejectCase{{"saddr#u8[16]", "af#u16"}, "saddr=ip(family)", "no integer field 'family'"},
        RejectCase{{"saddr#u8[16]", "af#char[2]"}, "saddr=ip(af)", "no integer field 'af'"},
        RejectCase{{"saddr#u8[16]", "af#bool"}, "saddr=ip(af)", "no integer field 'af'"},
        RejectCase{{"a#u8[4]"}, "a=hex", "is not a single integer"},
        RejectCase{{"a#unsigned __int128"}, "a=hex", "is not a single integer"},
        RejectCase{{"comm#char[16]"}, "comm=tcp_state", "is not a single integer"},
        RejectCase{{"ok#bool"}, "ok=errno", "is not a single integer"},
        RejectCase{{"e#u32[2]"}, "e=enum(a,b)", "is not a single integer"},
        RejectCase{{"s#u32"}, "s=string", "is not a byte array"},
        RejectCase{{"s#u32[2]"}, "s=string", "is not a byte array"}));

TEST(EventDecoderHints, RejectionNamesFieldAndType) {
  auto decoder = make_decoder({"family#u16", "port#u16"}, "port=ip");
  ASSERT_FALSE(decoder.ok());
  EXPECT_NE(decoder.error().message.find("port"), std::string::npos) << decoder.error().message;
  EXPECT_NE(decoder.error().message.find("'u16'"), std::string::npos) << decoder.error().message;
}

// --------------------------------------------------------- states program

struct StatesEvent {
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
static_assert(sizeof(StatesEvent) == 88);

const std::vector<std::string> kStatesFields = {
    "ts_us#u64",    "skaddr#u64", "pid#u32",   "comm#char[16]", "family#u16",  "saddr#u8[16]",
    "daddr#u8[16]", "sport#u16",  "dport#u16", "oldstate#u8",   "newstate#u8", "delta_us#u64",
};

Result<EventDecoder> states_decoder(DecoderOptions options = DecoderOptions{}) {
  auto hints = parse_format_hints(read_states_program());
  EXPECT_TRUE(hints.ok());
  return EventDecoder::make(layout_from(kStatesFields), hints.ok() ? *hints : std::vector<FormatHint>{}, "events",
                            std::move(options), fixed_clock());
}

StatesEvent states_sample() {
  StatesEvent e;
  std::memset(&e, 0, sizeof e);
  e.ts_us = 1000000;
  e.skaddr = 0xffff888100000000;
  e.pid = 1234;
  std::memcpy(e.comm, "curl", 4);
  e.family = 4;
  std::memcpy(e.saddr, v4_bytes("10.0.0.1").data(), 4);
  std::memcpy(e.daddr, v4_bytes("93.184.216.34").data(), 4);
  e.sport = 40000;
  e.dport = 443;
  e.oldstate = 7;
  e.newstate = 2;
  e.delta_us = 0;
  return e;
}

TEST(EventDecoderStates, ExactLine) {
  auto decoder = states_decoder();
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  ASSERT_EQ(decoder->layout().size, sizeof(StatesEvent));
  const StatesEvent e = states_sample();
  EXPECT_EQ(decode_line(*decoder, &e, sizeof e),
            std::string("{\"time\":\"") + kTsOneSecond +
                "\",\"ts_us\":1000000,\"skaddr\":\"0xffff888100000000\",\"pid\":1234,\"comm\":\"curl\","
                "\"family\":4,\"saddr\":\"10.0.0.1\",\"daddr\":\"93.184.216.34\",\"sport\":40000,\"dport\":443,"
                "\"oldstate\":\"CLOSE\",\"newstate\":\"SYN_SENT\",\"delta_us\":0}\n");
}

// A socket no process holds (an orphan after close(), an owner the tracer
// could not learn): the program leaves pid and comm zero.
TEST(EventDecoderStates, UnknownOwnerIsNull) {
  auto decoder = states_decoder(no_time());
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  StatesEvent e = states_sample();
  e.pid = 0;
  std::memset(e.comm, 0, sizeof e.comm);
  e.oldstate = 5;  // FIN_WAIT2
  e.newstate = 7;  // CLOSE
  EXPECT_EQ(decode_line(*decoder, &e, sizeof e),
            "{\"ts_us\":1000000,\"skaddr\":\"0xffff888100000000\",\"pid\":null,\"comm\":null,"
            "\"family\":4,\"saddr\":\"10.0.0.1\",\"daddr\":\"93.184.216.34\",\"sport\":40000,\"dport\":443,"
            "\"oldstate\":\"FIN_WAIT2\",\"newstate\":\"CLOSE\",\"delta_us\":0}\n");
}

TEST(EventDecoderStates, Ipv6Event) {
  auto decoder = states_decoder(no_time());
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  StatesEvent e = states_sample();
  e.family = 6;
  std::memcpy(e.saddr, v6_bytes("::1").data(), 16);
  std::memcpy(e.daddr, v6_bytes("::ffff:127.0.0.1").data(), 16);
  e.oldstate = 1;
  e.newstate = 4;
  e.delta_us = 123456789;
  const Json json = parse_line(decode_line(*decoder, &e, sizeof e));
  EXPECT_EQ(json.at("saddr"), "::1");
  EXPECT_EQ(json.at("daddr"), "::ffff:127.0.0.1");
  EXPECT_EQ(json.at("oldstate"), "ESTABLISHED");
  EXPECT_EQ(json.at("newstate"), "FIN_WAIT1");
  EXPECT_EQ(json.at("delta_us"), 123456789);
  EXPECT_FALSE(json.contains("time"));
}

TEST(EventDecoderStates, HostileCommStillOneValidLine) {
  auto decoder = states_decoder();
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  StatesEvent e = states_sample();
  // quote, backslash, newline, 0x01, 0xff, truncated UTF-8 lead, CR, tab, overlong, lone continuation
  const char hostile[16] = {'"', '\\', '\n', 0x01, '\xff', '\xc3', '\r', '\t', '\xc0', '\x80', '}', '{', ',', '\x7f',
                            '\xe2', '\x82'};
  std::memcpy(e.comm, hostile, 16);
  const std::string line = decode_line(*decoder, &e, sizeof e);
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(line.find('\t'), std::string::npos);
  const Json json = parse_line(line);
  const std::string R = "\xEF\xBF\xBD";
  EXPECT_EQ(json.at("comm"), "\"\\\n\x01" + R + R + "\r\t" + R + R + "}{,\x7f" + R + R);
  EXPECT_EQ(json.at("pid"), 1234);
  EXPECT_EQ(json.at("sport"), 40000);
  EXPECT_EQ(json.size(), 13u);
}

TEST(EventDecoderStates, RandomBytesAlwaysOneValidLine) {
  DecoderOptions options;
  options.event_name = "state";
  auto decoder = states_decoder(options);
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  std::mt19937_64 rng(2026);
  for (int iteration = 0; iteration < 3000; ++iteration) {
    unsigned char bytes[sizeof(StatesEvent)];
    for (auto& b : bytes) b = static_cast<unsigned char>(rng());
    if (iteration % 3 == 0) bytes[36] = 4, bytes[37] = 0;   // family 4
    if (iteration % 3 == 1) bytes[36] = 10, bytes[37] = 0;  // family AF_INET6
    std::string out;
    ASSERT_TRUE(decoder->append_json(out, bytes, sizeof bytes));
    ASSERT_EQ(out.back(), '\n');
    ASSERT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
    Json json;
    ASSERT_NO_THROW(json = Json::parse(out)) << "iteration " << iteration << ": " << out;
    ASSERT_EQ(json.size(), 14u) << out;
    EXPECT_EQ(keys(json).front(), "event");
    EXPECT_TRUE(json.at("time").is_string());
    EXPECT_TRUE(json.at("comm").is_string());
    EXPECT_TRUE(json.at("oldstate").is_string());
  }
}

TEST(EventDecoder, RandomBytesForEveryTypeAlwaysParse) {
  auto decoder = make_decoder(kAllTypes, "u8v=tcp_state s8v=errno u16v=enum(a,b) s32v=hex name=string");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  std::mt19937_64 rng(7);
  for (int iteration = 0; iteration < 3000; ++iteration) {
    std::vector<unsigned char> bytes(decoder->layout().size);
    for (auto& b : bytes) b = static_cast<unsigned char>(rng());
    std::string out;
    ASSERT_TRUE(decoder->append_json(out, bytes.data(), bytes.size()));
    ASSERT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
    Json json;
    ASSERT_NO_THROW(json = Json::parse(out)) << out;
    ASSERT_EQ(json.size(), kAllTypes.size());
  }
}

// append_json() reserves max_line_chars() and writes through a raw pointer:
// the bound must hold for the widest value of every type and hint, or the
// writer would run past the string's size. One member per decoder, so that
// the slack of one member's bound cannot hide another's shortfall.
TEST(EventDecoder, WidestValuesStayWithinTheReservedBound) {
  const std::vector<std::pair<std::string, std::string>> members = {
      {"state#s8", "state=tcp_state"}, {"err#s64", "err=errno"},  {"uerr#u32", "uerr=errno"},
      {"choice#s32", "choice=enum(alpha,beta)"}, {"addr#u8[16]", "addr=ip(fam)"},
      {"addr4#u32", "addr4=ip(fam)"}, {"label#u8[12]", "label=string"}, {"hexed#u64", "hexed=hex"},
      {"flag#_Bool", ""}, {"name#char[8]", ""}, {"words#s64[4]", ""}, {"ptr#void *", ""},
      {"big#unsigned __int128", ""}, {"neg#__int128", ""}, {"grid#u8[2][3]", ""}, {"n#u64", ""},
  };
  for (const auto& [member, hint] : members) {
    for (const bool add_time : {false, true}) {
      DecoderOptions options;
      options.add_time = add_time;
      // The family member only where an ip hint needs it: its own bound's
      // slack would hide a shortfall.
      const bool needs_family = hint.find("ip(fam)") != std::string::npos;
      auto decoder = make_decoder(needs_family ? std::vector<std::string>{"fam#u16", member}
                                               : std::vector<std::string>{member},
                                  hint, options);
      ASSERT_TRUE(decoder.ok()) << member << ": " << decoder.error().message;
      std::mt19937_64 rng(11);
      for (int iteration = 0; iteration < 400; ++iteration) {
        std::vector<unsigned char> bytes(decoder->layout().size);
        // Control bytes (six characters each in a string), invalid UTF-8,
        // all-ones and sign-bit-only integers are the widest; random bytes
        // mix them.
        const unsigned char fills[] = {0x01, 0xff, 0x80, 0x7f};
        for (auto& b : bytes) b = iteration < 4 ? fills[iteration] : static_cast<unsigned char>(rng());
        if (needs_family) {
          bytes[0] = iteration % 2 ? 10 : 2;  // AF_INET6 or AF_INET
          bytes[1] = 0;
        }
        std::string out = "kept";
        ASSERT_TRUE(decoder->append_json(out, bytes.data(), bytes.size()));
        ASSERT_EQ(out.substr(0, 4), "kept");
        ASSERT_LE(out.size() - 4, decoder->max_line_chars()) << out;
        Json json;
        ASSERT_NO_THROW(json = Json::parse(out.substr(4))) << out;
        ASSERT_EQ(json.size(), (add_time ? 2u : 1u) + (needs_family ? 1u : 0u)) << out;
      }
    }
  }
}

// ------------------------------------------------------------- lifetime

TEST(EventDecoder, CopyDoesNotDependOnTheOriginal) {
  std::optional<EventDecoder> original;
  {
    auto made = make_decoder({"family#u16", "saddr#u8[4]", "ts_us#u64"}, "saddr=ip", DecoderOptions{});
    ASSERT_TRUE(made.ok()) << made.error().message;
    original.emplace(std::move(made).value());
  }
  const EventDecoder copy = *original;
  original.reset();  // the copy must not point into the destroyed decoder
  // Reuse the freed memory with a layout whose fields sit elsewhere.
  std::vector<FieldLayout> scribble(3);
  for (auto& f : scribble) f.offset = 1 << 20, f.element_size = 8;

  Sample sample(copy.layout());
  sample.set<uint16_t>("family", 4).set_bytes("saddr", v4_bytes("1.2.3.4")).set<uint64_t>("ts_us", 1000000);
  EXPECT_EQ(decode_line(copy, sample),
            std::string("{\"time\":\"") + kTsOneSecond + "\",\"family\":4,\"saddr\":\"1.2.3.4\",\"ts_us\":1000000}\n");
}

TEST(EventDecoder, EmptyLayoutStillYieldsAnObject) {
  auto decoder = EventDecoder::make(EventLayout{}, {}, "events", no_time(), fixed_clock());
  ASSERT_TRUE(decoder.ok());
  std::string out;
  ASSERT_TRUE(decoder->append_json(out, nullptr, 0));
  EXPECT_EQ(out, "{}\n");
}

}  // namespace
}  // namespace tcptrace

namespace tcptrace {
namespace {

TEST(EventDecoderHints, ErrnoOnUnsignedFieldIsAPlainErrno) {
  auto decoder = make_decoder({"small#u8"}, "small=errno");
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  sample.set<uint8_t>("small", 255);  // not -1 (EPERM): u8 cannot hold -errno
  EXPECT_EQ(decode_line(*decoder, sample), "{\"small\":255}\n");
  sample.set<uint8_t>("small", 111);
  EXPECT_EQ(decode_line(*decoder, sample), "{\"small\":\"ECONNREFUSED\"}\n");
}

TEST(EventDecoder, MembersNamedLikeHostFieldsAreRejected) {
  DecoderOptions timed;
  auto with_time = make_decoder({"time#u64", "pid#u32"}, "", timed);
  ASSERT_FALSE(with_time.ok());
  EXPECT_NE(with_time.error().message.find("member 'time' would clash"), std::string::npos);
  // Without the host's time field, a member may be called time.
  EXPECT_TRUE(make_decoder({"time#u64"}, "", no_time()).ok());
  DecoderOptions named = no_time();
  named.event_name = "events";
  auto with_event = make_decoder({"event#u32"}, "", named);
  ASSERT_FALSE(with_event.ok());
  EXPECT_NE(with_event.error().message.find("member 'event' would clash"), std::string::npos);
}

}  // namespace
}  // namespace tcptrace

namespace tcptrace {
namespace {

TEST(EventDecoder, NestedStructsAndArraysOfThemAreObjects) {
  auto inner = layout_from_bcc_type_description(
      R"(["who", [["pid","unsigned int"], ["comm","char",[4]]], "struct_packed"])");
  ASSERT_TRUE(inner.ok()) << inner.error().message;
  RecordLayouts records = {{"struct who", std::make_shared<const EventLayout>(std::move(inner).value())}};
  auto layout = parse_event_layout({"caller#struct who", "peers#struct who[2]", "fd#s32"}, records);
  ASSERT_TRUE(layout.ok()) << layout.error().message;
  auto decoder = EventDecoder::make(std::move(layout).value(), {}, "events", no_time(), fixed_clock());
  ASSERT_TRUE(decoder.ok()) << decoder.error().message;
  Sample sample(decoder->layout());
  std::vector<unsigned char> bytes = sample.bytes();
  auto put = [&](size_t offset, uint32_t pid, const char* comm) {
    std::memcpy(bytes.data() + offset, &pid, 4);
    std::memcpy(bytes.data() + offset + 4, comm, 4);
  };
  put(0, 7, "ab\0\0");
  put(8, 8, "cdef");
  put(16, 9, "g\0\0\0");
  const int32_t fd = -3;
  std::memcpy(bytes.data() + 24, &fd, 4);
  std::string out;
  ASSERT_TRUE(decoder->append_json(out, bytes.data(), bytes.size()));
  EXPECT_EQ(out,
            "{\"caller\":{\"pid\":7,\"comm\":\"ab\"},\"peers\":[{\"pid\":8,\"comm\":\"cdef\"},"
            "{\"pid\":9,\"comm\":\"g\"}],\"fd\":-3}\n");
}

}  // namespace
}  // namespace tcptrace
