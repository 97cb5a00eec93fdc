#include "json_writer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace tcptrace::json {
namespace {

using namespace std::string_literals;

const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

std::string literal_of(std::string_view bytes) {
  std::string out;
  append_string(out, bytes);
  return out;
}

// Parses a JSON string literal produced by append_string; fails the test when
// nlohmann rejects it (it validates escapes and UTF-8 strictly).
std::string parse_literal(const std::string& literal) {
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(literal);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not valid JSON: " << literal << " (" << e.what() << ")";
    return {};
  }
  EXPECT_TRUE(parsed.is_string()) << literal;
  return parsed.is_string() ? parsed.get<std::string>() : std::string{};
}

// An independent reference for the replacement rule, written in terms of code
// points rather than byte ranges: a sequence is kept when its lead byte
// announces a length, all continuation bytes are present, and the decoded
// code point is neither overlong, a surrogate, nor beyond U+10FFFF. Otherwise
// the single lead byte becomes U+FFFD and decoding resumes at the next byte.
std::string reference_sanitize(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      out.push_back(static_cast<char>(b0));
      ++i;
      continue;
    }
    size_t length = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if ((b0 & 0xE0) == 0xC0) {
      length = 2, cp = b0 & 0x1F, min = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
      length = 3, cp = b0 & 0x0F, min = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
      length = 4, cp = b0 & 0x07, min = 0x10000;
    }
    bool valid = length != 0 && i + length <= s.size();
    for (size_t k = 1; valid && k < length; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) valid = false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (valid && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) valid = false;
    if (valid) {
      out.append(s.substr(i, length));
      i += length;
    } else {
      out += kReplacement;
      ++i;
    }
  }
  return out;
}

// ---------------------------------------------------------------- strings

TEST(JsonString, PlainAsciiIsQuotedVerbatim) {
  EXPECT_EQ(literal_of("hello world"), "\"hello world\"");
  EXPECT_EQ(literal_of(""), "\"\"");
  EXPECT_EQ(literal_of("a/b"), "\"a/b\"");  // '/' needs no escape
}

TEST(JsonString, AppendsWithoutClearing) {
  std::string out = "prefix:";
  append_string(out, "x");
  append_string(out, "y");
  EXPECT_EQ(out, "prefix:\"x\"\"y\"");
}

TEST(JsonString, EscapesQuoteAndBackslash) {
  EXPECT_EQ(literal_of("\""), R"("\"")");
  EXPECT_EQ(literal_of("\\"), R"("\\")");
  EXPECT_EQ(literal_of("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(literal_of("\\\""), R"("\\\"")");
}

TEST(JsonString, ShortEscapes) {
  EXPECT_EQ(literal_of("\n"), R"("\n")");
  EXPECT_EQ(literal_of("\r"), R"("\r")");
  EXPECT_EQ(literal_of("\t"), R"("\t")");
  EXPECT_EQ(literal_of("\b"), R"("\b")");
  EXPECT_EQ(literal_of("\f"), R"("\f")");
  EXPECT_EQ(literal_of("line1\r\nline2\tend"), R"("line1\r\nline2\tend")");
}

TEST(JsonString, EveryControlCharacterAndDelIsEscaped) {
  for (int c = 0; c < 0x20; ++c) {
    std::string expected;
    switch (c) {
      case '\n': expected = R"(\n)"; break;
      case '\r': expected = R"(\r)"; break;
      case '\t': expected = R"(\t)"; break;
      case '\b': expected = R"(\b)"; break;
      case '\f': expected = R"(\f)"; break;
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        expected = buf;
      }
    }
    const std::string input(1, static_cast<char>(c));
    const std::string literal = literal_of(input);
    EXPECT_EQ(literal, "\"" + expected + "\"") << "byte 0x" << std::hex << c;
    EXPECT_EQ(parse_literal(literal), input) << "byte 0x" << std::hex << c;
  }
  EXPECT_EQ(literal_of("\x7f"), R"("\u007f")");
  EXPECT_EQ(parse_literal(literal_of("\x7f")), "\x7f");
  // Spot checks of the \u00XX form with both hex digits in play.
  EXPECT_EQ(literal_of(std::string_view("\0", 1)), R"("\u0000")");
  EXPECT_EQ(literal_of("\x01"), R"("\u0001")");
  EXPECT_EQ(literal_of("\x0b"), R"("\u000b")");
  EXPECT_EQ(literal_of("\x1f"), R"("\u001f")");
  EXPECT_EQ(literal_of("a\x1b[0mb"), R"("a\u001b[0mb")");
}

TEST(JsonString, EmbeddedNulDoesNotEndTheString) {
  const std::string input("a\0b", 3);
  EXPECT_EQ(literal_of(input), R"("a\u0000b")");
  EXPECT_EQ(parse_literal(literal_of(input)), input);
}

TEST(JsonString, PrintableAsciiOtherThanQuoteAndBackslashPassesThrough) {
  for (int c = 0x20; c < 0x7f; ++c) {
    const std::string input(1, static_cast<char>(c));
    if (c == '"' || c == '\\') continue;
    EXPECT_EQ(literal_of(input), "\"" + input + "\"") << c;
  }
}

TEST(JsonString, ValidMultibyteUtf8PassesThroughUnchanged) {
  const std::vector<std::string> valid = {
      "\xC3\xA9",          // U+00E9 é (2 bytes)
      "\xC2\x80",          // U+0080, smallest 2-byte
      "\xDF\xBF",          // U+07FF, largest 2-byte
      "\xE2\x82\xAC",      // U+20AC € (3 bytes)
      "\xE0\xA0\x80",      // U+0800, smallest 3-byte
      "\xED\x9F\xBF",      // U+D7FF, just below the surrogates
      "\xEE\x80\x80",      // U+E000, just above the surrogates
      "\xEF\xBF\xBD",      // U+FFFD itself
      "\xEF\xBF\xBF",      // U+FFFF
      "\xF0\x9F\x98\x80",  // U+1F600 😀 (4 bytes)
      "\xF0\x90\x80\x80",  // U+10000, smallest 4-byte
      "\xF4\x8F\xBF\xBF",  // U+10FFFF, largest code point
      "na\xC3\xAFve caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x8E\x89",
  };
  for (const auto& s : valid) {
    EXPECT_EQ(literal_of(s), "\"" + s + "\"");
    EXPECT_EQ(parse_literal(literal_of(s)), s);
  }
}

struct InvalidCase {
  std::string input;
  std::string expected;  // decoded string after parsing the JSON
};

TEST(JsonString, EachInvalidByteBecomesOneReplacementCharacter) {
  const std::string R = kReplacement;
  const std::vector<InvalidCase> cases = {
      {"\x80", R},                                   // lone continuation byte
      {"\xBF", R},                                   // lone continuation byte
      {"a\x80z", "a" + R + "z"},                     //
      {"\x80\x80\x80", R + R + R},                   // several continuations
      {"\xC3", R},                                   // truncated 2-byte at end
      {"ab\xE2\x82", "ab" + R + R},                  // truncated 3-byte at end
      {"\xE2", R},                                   // truncated 3-byte, lead only
      {"\xF0\x9F\x98", R + R + R},                   // truncated 4-byte at end
      {"\xF0", R},                                   //
      {"\xC3(", R + "("},                            // lead followed by ASCII
      {"\xE2\x82(", R + R + "("},                    //
      {"\xC3\xC3\xA9", R + "\xC3\xA9"},              // bad lead, then a valid é
      {"\xC0\x80", R + R},                           // overlong NUL
      {"\xC1\xBF", R + R},                           // overlong U+007F
      {"\xE0\x80\x80", R + R + R},                   // overlong 3-byte
      {"\xE0\x9F\xBF", R + R + R},                   // overlong U+07FF
      {"\xF0\x80\x80\x80", R + R + R + R},           // overlong 4-byte
      {"\xF0\x8F\xBF\xBF", R + R + R + R},           // overlong U+FFFF
      {"\xED\xA0\x80", R + R + R},                   // surrogate U+D800
      {"\xED\xBF\xBF", R + R + R},                   // surrogate U+DFFF
      {"\xF4\x90\x80\x80", R + R + R + R},           // U+110000
      {"\xF5\x80\x80\x80", R + R + R + R},           // lead beyond F4
      {"\xF8\x88\x80\x80\x80", R + R + R + R + R},   // old 5-byte form
      {"\xFE", R},                                   //
      {"\xFF", R},                                   //
      {"\xFF\xFE", R + R},                           //
      {"x\xFFy", "x" + R + "y"},                     //
  };
  for (const auto& c : cases) {
    const std::string literal = literal_of(c.input);
    // The replacement is emitted as raw UTF-8, never as \ufffd.
    EXPECT_EQ(literal, "\"" + c.expected + "\"");
    EXPECT_EQ(parse_literal(literal), c.expected);
    EXPECT_EQ(reference_sanitize(c.input), c.expected);  // keeps the reference honest
  }
}

TEST(JsonString, EscapesStillApplyNextToInvalidBytes) {
  EXPECT_EQ(literal_of("\xE2\x82\""), "\"" + kReplacement + kReplacement + "\\\"\"");
  EXPECT_EQ(literal_of("\xC3\n"), "\"" + kReplacement + "\\n\"");
  EXPECT_EQ(literal_of("\xC3\x7f"), "\"" + kReplacement + "\\u007f\"");
}

TEST(JsonString, EveryOneAndTwoByteInputParsesAndMatchesReference) {
  for (int a = 0; a < 256; ++a) {
    const std::string one(1, static_cast<char>(a));
    ASSERT_EQ(parse_literal(literal_of(one)), reference_sanitize(one)) << a;
    for (int b = 0; b < 256; ++b) {
      const std::string two{static_cast<char>(a), static_cast<char>(b)};
      const std::string literal = literal_of(two);
      ASSERT_EQ(parse_literal(literal), reference_sanitize(two)) << a << "," << b;
    }
  }
}

TEST(JsonString, AllThreeByteSequencesWithUtf8LeadMatchReference) {
  for (int a = 0xE0; a <= 0xEF; ++a) {
    for (int b = 0x70; b <= 0xC1; ++b) {
      for (int c = 0x70; c <= 0xC1; ++c) {
        const std::string s{static_cast<char>(a), static_cast<char>(b), static_cast<char>(c)};
        ASSERT_EQ(parse_literal(literal_of(s)), reference_sanitize(s)) << a << "," << b << "," << c;
      }
    }
  }
}

TEST(JsonString, RandomBytesAlwaysYieldValidJsonThatMatchesReference) {
  std::mt19937 rng(12345);
  // Biased towards the interesting bytes so that long valid sequences appear.
  const std::vector<unsigned char> pool = {0x00, 0x01, 0x0a, 0x1f, '"', '\\', 'a', 0x7f, 0x80, 0x8f, 0x90,
                                           0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0,
                                           0xf4, 0xf5, 0xff};
  for (int iteration = 0; iteration < 20000; ++iteration) {
    std::string s(rng() % 12, '\0');
    for (char& ch : s) {
      ch = static_cast<char>(rng() % 2 ? pool[rng() % pool.size()] : rng() % 256);
    }
    ASSERT_EQ(parse_literal(literal_of(s)), reference_sanitize(s)) << "iteration " << iteration;
  }
}

// ---------------------------------------------------------------- numbers

std::string uint_text(uint64_t v) {
  std::string out;
  append_uint(out, v);
  return out;
}
std::string int_text(int64_t v) {
  std::string out;
  append_int(out, v);
  return out;
}
std::string uint_exact(uint64_t v) {
  std::string out;
  append_uint_exact(out, v);
  return out;
}
std::string int_exact(int64_t v) {
  std::string out;
  append_int_exact(out, v);
  return out;
}
std::string hex(uint64_t v) {
  std::string out;
  append_hex_string(out, v);
  return out;
}

TEST(JsonNumber, MaxExactDoubleIsTwoToThe53) {
  EXPECT_EQ(kMaxExactDouble, 9007199254740992u);
  EXPECT_EQ(static_cast<uint64_t>(static_cast<double>(kMaxExactDouble)), kMaxExactDouble);
  EXPECT_NE(static_cast<uint64_t>(static_cast<double>(kMaxExactDouble + 1)), kMaxExactDouble + 1);
}

TEST(JsonNumber, PlainIntegers) {
  EXPECT_EQ(uint_text(0), "0");
  EXPECT_EQ(uint_text(42), "42");
  EXPECT_EQ(uint_text(UINT64_MAX), "18446744073709551615");
  EXPECT_EQ(int_text(0), "0");
  EXPECT_EQ(int_text(-1), "-1");
  EXPECT_EQ(int_text(INT64_MAX), "9223372036854775807");
  EXPECT_EQ(int_text(INT64_MIN), "-9223372036854775808");
  std::string out = "[";
  append_uint(out, 7);
  out += ",";
  append_int(out, -7);
  EXPECT_EQ(out, "[7,-7");
}

TEST(JsonNumber, UnsignedExactUpToTwoToThe53InclusiveIsANumber) {
  EXPECT_EQ(uint_exact(0), "0");
  EXPECT_EQ(uint_exact(1), "1");
  EXPECT_EQ(uint_exact(kMaxExactDouble - 1), "9007199254740991");
  EXPECT_EQ(uint_exact(kMaxExactDouble), "9007199254740992");
}

TEST(JsonNumber, UnsignedBeyondTwoToThe53IsAString) {
  EXPECT_EQ(uint_exact(kMaxExactDouble + 1), "\"9007199254740993\"");
  EXPECT_EQ(uint_exact(uint64_t{1} << 63), "\"9223372036854775808\"");
  EXPECT_EQ(uint_exact(UINT64_MAX), "\"18446744073709551615\"");
  const auto parsed = nlohmann::json::parse(uint_exact(UINT64_MAX));
  ASSERT_TRUE(parsed.is_string());
  EXPECT_EQ(parsed.get<std::string>(), "18446744073709551615");
}

TEST(JsonNumber, SignedExactBoundaries) {
  const auto max = static_cast<int64_t>(kMaxExactDouble);
  EXPECT_EQ(int_exact(0), "0");
  EXPECT_EQ(int_exact(-5), "-5");
  EXPECT_EQ(int_exact(max), "9007199254740992");
  EXPECT_EQ(int_exact(-max), "-9007199254740992");
  EXPECT_EQ(int_exact(max + 1), "\"9007199254740993\"");
  EXPECT_EQ(int_exact(-max - 1), "\"-9007199254740993\"");
  EXPECT_EQ(int_exact(INT64_MAX), "\"9223372036854775807\"");
  EXPECT_EQ(int_exact(INT64_MIN), "\"-9223372036854775808\"");
}

TEST(JsonNumber, ExactNumbersParseBackToTheSameValue) {
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, uint64_t{123456789}, kMaxExactDouble}) {
    const auto parsed = nlohmann::json::parse(uint_exact(v));
    ASSERT_TRUE(parsed.is_number_unsigned() || parsed.is_number_integer());
    EXPECT_EQ(parsed.get<uint64_t>(), v);
    // And a double holds it exactly, which is the point of the rule.
    EXPECT_EQ(static_cast<uint64_t>(static_cast<double>(v)), v);
  }
  const auto negative = nlohmann::json::parse(int_exact(-static_cast<int64_t>(kMaxExactDouble)));
  EXPECT_EQ(negative.get<int64_t>(), -static_cast<int64_t>(kMaxExactDouble));
}

TEST(JsonNumber, HexString) {
  EXPECT_EQ(hex(0), "\"0x0\"");
  EXPECT_EQ(hex(1), "\"0x1\"");
  EXPECT_EQ(hex(0xabc), "\"0xabc\"");
  EXPECT_EQ(hex(0xABCDEF), "\"0xabcdef\"");  // lower case
  EXPECT_EQ(hex(0xffff888100000000), "\"0xffff888100000000\"");
  EXPECT_EQ(hex(UINT64_MAX), "\"0xffffffffffffffff\"");
  EXPECT_EQ(hex(0x10), "\"0x10\"");  // no leading zeros dropped from the middle
}

TEST(JsonKey, QuotesAndAddsColon) {
  std::string out = "{";
  append_key(out, "pid");
  append_uint(out, 1);
  EXPECT_EQ(out, "{\"pid\":1");
  const auto parsed = nlohmann::json::parse(out + "}");
  EXPECT_EQ(parsed.at("pid").get<int>(), 1);
}

}  // namespace
}  // namespace tcptrace::json

#include <arpa/inet.h>

#include <random>

namespace tcptrace {
namespace {

std::string via_inet_ntop(int family, const unsigned char* bytes) {
  char text[INET6_ADDRSTRLEN];
  EXPECT_NE(inet_ntop(family, bytes, text, sizeof text), nullptr);
  return "\"" + std::string(text) + "\"";
}

// The hand-written formatters must print exactly what inet_ntop prints.
TEST(IpFormat, MatchesInetNtopOnEveryZeroPatternAndRandomAddresses) {
  std::mt19937 random(12345);
  std::vector<std::array<unsigned char, 16>> addresses;
  // Every pattern of zero and non-zero words (runs, ties, edges), with
  // random and small non-zero values.
  for (unsigned mask = 0; mask < 256; ++mask) {
    for (int variant = 0; variant < 3; ++variant) {
      std::array<unsigned char, 16> a{};
      for (int w = 0; w < 8; ++w) {
        if (!(mask >> w & 1)) continue;
        const unsigned value = variant == 0 ? 1 : variant == 1 ? 0xffff : (random() % 0xfffe) + 1;
        a[2 * w] = static_cast<unsigned char>(value >> 8);
        a[2 * w + 1] = static_cast<unsigned char>(value);
      }
      addresses.push_back(a);
    }
  }
  // IPv4-mapped and -compatible forms.
  for (int i = 0; i < 200; ++i) {
    std::array<unsigned char, 16> a{};
    for (int b = 12; b < 16; ++b) a[b] = static_cast<unsigned char>(random());
    addresses.push_back(a);
    a[10] = a[11] = 0xff;
    addresses.push_back(a);
  }
  for (int i = 0; i < 2000; ++i) {
    std::array<unsigned char, 16> a{};
    for (auto& byte : a) byte = static_cast<unsigned char>(random() % 3 == 0 ? 0 : random());
    addresses.push_back(a);
  }
  for (const auto& a : addresses) {
    std::string out;
    json::append_ipv6_string(out, a.data());
    ASSERT_EQ(out, via_inet_ntop(AF_INET6, a.data()));
  }
  for (int i = 0; i < 5000; ++i) {
    unsigned char v4[4];
    for (auto& byte : v4) byte = static_cast<unsigned char>(i < 256 ? i : random());
    std::string out;
    json::append_ipv4_string(out, v4);
    ASSERT_EQ(out, via_inet_ntop(AF_INET, v4));
  }
}

}  // namespace
}  // namespace tcptrace
