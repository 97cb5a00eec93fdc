#include "format_hints.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tcptrace {
namespace {

std::vector<FormatHint> parse_ok(std::string_view source) {
  auto hints = parse_format_hints(source);
  EXPECT_TRUE(hints.ok()) << (hints.ok() ? "" : hints.error().message);
  return hints.ok() ? std::move(hints).value() : std::vector<FormatHint>{};
}

std::string parse_error(std::string_view source) {
  auto hints = parse_format_hints(source);
  EXPECT_FALSE(hints.ok()) << "accepted: " << source;
  if (hints.ok()) return {};
  EXPECT_EQ(hints.error().exit_code, ExitCode::runtime);
  return hints.error().message;
}

std::string read_states_program() {
  // tests/format_hints_test.cpp -> programs/states.bpf.c
  const auto path = std::filesystem::path(__FILE__).parent_path().parent_path() / "programs" / "states.bpf.c";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(FormatHints, StatesProgramHeaderComment) {
  const std::string source = read_states_program();
  ASSERT_FALSE(source.empty());
  const auto hints = parse_ok(source);
  ASSERT_EQ(hints.size(), 7u);

  EXPECT_EQ(hints[0].field, "skaddr");
  EXPECT_EQ(hints[0].format, FieldFormat::hex);
  EXPECT_TRUE(hints[0].arguments.empty());

  EXPECT_EQ(hints[1].field, "saddr");
  EXPECT_EQ(hints[1].format, FieldFormat::ip_address);
  EXPECT_EQ(hints[1].arguments, std::vector<std::string>{"family"});

  EXPECT_EQ(hints[2].field, "daddr");
  EXPECT_EQ(hints[2].format, FieldFormat::ip_address);
  EXPECT_EQ(hints[2].arguments, std::vector<std::string>{"family"});

  EXPECT_EQ(hints[3].field, "oldstate");
  EXPECT_EQ(hints[3].format, FieldFormat::tcp_state);
  EXPECT_EQ(hints[4].field, "newstate");
  EXPECT_EQ(hints[4].format, FieldFormat::tcp_state);

  // The owner is null when no process owns the socket.
  EXPECT_EQ(hints[5].field, "pid");
  EXPECT_TRUE(hints[5].null_when_zero);
  EXPECT_EQ(hints[6].field, "comm");
  EXPECT_TRUE(hints[6].null_when_zero);

  for (const auto& hint : hints) EXPECT_TRUE(hint.table.empty()) << hint.field;
}

TEST(FormatHints, StatesHeaderLineOnItsOwn) {
  const auto hints = parse_ok(
      " * tcptrace:format skaddr=hex saddr=ip(family) daddr=ip(family) oldstate=tcp_state newstate=tcp_state\n");
  EXPECT_EQ(hints.size(), 5u);
}

TEST(FormatHints, NoMarkerNoHints) {
  EXPECT_TRUE(parse_ok("").empty());
  EXPECT_TRUE(parse_ok("int x;\n// saddr=ip\n/* tcptrace saddr=ip */\n").empty());
  EXPECT_TRUE(parse_ok("// tcptrace:format\n").empty());
  EXPECT_TRUE(parse_ok("// tcptrace:format    \t  \n").empty());
}

TEST(FormatHints, MultipleMarkerLinesInOrder) {
  const auto hints = parse_ok(
      "// tcptrace:format a=hex\n"
      "struct event { u32 a; int b; char c[4]; };\n"
      "// tcptrace:format b=errno c=string\n"
      "// tcptrace:format d=enum(x,y,z)");  // no trailing newline
  ASSERT_EQ(hints.size(), 4u);
  EXPECT_EQ(hints[0].field, "a");
  EXPECT_EQ(hints[0].format, FieldFormat::hex);
  EXPECT_EQ(hints[1].field, "b");
  EXPECT_EQ(hints[1].format, FieldFormat::errno_name);
  EXPECT_EQ(hints[2].field, "c");
  EXPECT_EQ(hints[2].format, FieldFormat::string);
  EXPECT_EQ(hints[3].field, "d");
  EXPECT_EQ(hints[3].format, FieldFormat::enumeration);
  EXPECT_EQ(hints[3].arguments, (std::vector<std::string>{"x", "y", "z"}));
}

TEST(FormatHints, TabsMultipleSpacesAndCrlf) {
  const auto hints = parse_ok("//\ttcptrace:format\ta=hex  \t b=tcp_state\r\n// tcptrace:format c=errno\r\n");
  ASSERT_EQ(hints.size(), 3u);
  EXPECT_EQ(hints[0].field, "a");
  EXPECT_EQ(hints[1].field, "b");
  EXPECT_EQ(hints[1].format, FieldFormat::tcp_state);
  EXPECT_EQ(hints[2].field, "c");
  EXPECT_EQ(hints[2].format, FieldFormat::errno_name);
}

TEST(FormatHints, TablePrefix) {
  const auto hints = parse_ok("// tcptrace:format tbl.field=hex events.saddr=ip(af) other=hex\n");
  ASSERT_EQ(hints.size(), 3u);
  EXPECT_EQ(hints[0].table, "tbl");
  EXPECT_EQ(hints[0].field, "field");
  EXPECT_EQ(hints[0].format, FieldFormat::hex);
  EXPECT_EQ(hints[1].table, "events");
  EXPECT_EQ(hints[1].field, "saddr");
  EXPECT_EQ(hints[1].arguments, std::vector<std::string>{"af"});
  EXPECT_EQ(hints[2].table, "");
  EXPECT_EQ(hints[2].field, "other");
}

TEST(FormatHints, IpFamilyArgument) {
  const auto hints = parse_ok("// tcptrace:format a=ip b=ip(af_1) c=ip(_x)\n");
  ASSERT_EQ(hints.size(), 3u);
  EXPECT_EQ(hints[0].arguments, std::vector<std::string>{"family"});
  EXPECT_EQ(hints[1].arguments, std::vector<std::string>{"af_1"});
  EXPECT_EQ(hints[2].arguments, std::vector<std::string>{"_x"});
}

TEST(FormatHints, EnumNames) {
  const auto hints = parse_ok("// tcptrace:format o=enum(established,refused) one=enum(only)\n");
  ASSERT_EQ(hints.size(), 2u);
  EXPECT_EQ(hints[0].format, FieldFormat::enumeration);
  EXPECT_EQ(hints[0].arguments, (std::vector<std::string>{"established", "refused"}));
  EXPECT_EQ(hints[1].arguments, std::vector<std::string>{"only"});
}

TEST(FormatHints, EveryKindWithoutArguments) {
  const auto hints = parse_ok("// tcptrace:format a=hex b=tcp_state c=errno d=string e=ip\n");
  ASSERT_EQ(hints.size(), 5u);
  EXPECT_EQ(hints[0].format, FieldFormat::hex);
  EXPECT_EQ(hints[1].format, FieldFormat::tcp_state);
  EXPECT_EQ(hints[2].format, FieldFormat::errno_name);
  EXPECT_EQ(hints[3].format, FieldFormat::string);
  EXPECT_EQ(hints[4].format, FieldFormat::ip_address);
  for (size_t i = 0; i < 4; ++i) EXPECT_TRUE(hints[i].arguments.empty()) << i;
}

TEST(FormatHints, OptionalIsAModifier) {
  const auto hints = parse_ok("// tcptrace:format pid=optional saddr=ip saddr=optional\n");
  ASSERT_EQ(hints.size(), 3u);
  EXPECT_TRUE(hints[0].null_when_zero);
  EXPECT_EQ(hints[0].format, FieldFormat::by_type);
  EXPECT_FALSE(hints[1].null_when_zero);
  EXPECT_EQ(hints[1].format, FieldFormat::ip_address);
  EXPECT_TRUE(hints[2].null_when_zero);
  EXPECT_EQ(parse_error("// tcptrace:format pid=optional(x)\n"), "line 1: bad format hint 'pid=optional(x)': this kind takes no argument");
}

TEST(FormatHints, MarkerMayFollowAnyPrefix) {
  const auto hints = parse_ok("u32 x; // tcptrace:format x=hex\n");
  ASSERT_EQ(hints.size(), 1u);
  EXPECT_EQ(hints[0].field, "x");
}

// ------------------------------------------------------------------ errors

struct ErrorCase {
  const char* token;
  const char* reason;  // a fragment the message must contain
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.token; }

class BadHint : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(BadHint, NamesLineTokenAndReason) {
  const ErrorCase& c = GetParam();
  const std::string source = std::string("/* program */\n// tcptrace:format good=hex\n// tcptrace:format ok=errno ") +
                             c.token + " later=hex\n// tcptrace:format fine=hex\n";
  const std::string message = parse_error(source);
  EXPECT_NE(message.find("line 3"), std::string::npos) << message;
  EXPECT_NE(message.find(std::string("'") + c.token + "'"), std::string::npos) << message;
  EXPECT_NE(message.find(c.reason), std::string::npos) << message;
}

INSTANTIATE_TEST_SUITE_P(
    Errors, BadHint,
    ::testing::Values(ErrorCase{"a=foo", "unknown kind"}, ErrorCase{"a=", "unknown kind"},
                      ErrorCase{"a=IP", "unknown kind"}, ErrorCase{"saddr", "expected FIELD=KIND"},
                      ErrorCase{"=hex", "field name is not an identifier"},
                      ErrorCase{"1a=hex", "field name is not an identifier"},
                      ErrorCase{"a-b=hex", "field name is not an identifier"},
                      ErrorCase{"t.=hex", "field name is not an identifier"},
                      ErrorCase{"t.a.b=hex", "field name is not an identifier"},
                      ErrorCase{".a=hex", "table name is not an identifier"},
                      ErrorCase{"9t.a=hex", "table name is not an identifier"},
                      ErrorCase{"a=enum", "enum needs a list"}, ErrorCase{"a=enum()", "enum needs a list"},
                      ErrorCase{"a=enum(x,,y)", "empty name"}, ErrorCase{"a=enum(x,)", "empty name"},
                      ErrorCase{"a=enum(,x)", "empty name"}, ErrorCase{"a=hex(1)", "takes no argument"},
                      ErrorCase{"a=tcp_state(x)", "takes no argument"},
                      ErrorCase{"a=errno()", "takes no argument"},
                      ErrorCase{"a=string(x)", "takes no argument"}, ErrorCase{"a=ip(family", "missing ')'"},
                      ErrorCase{"a=enum(x,y", "missing ')'"},
                      ErrorCase{"a=ip()", "family field is not an identifier"},
                      ErrorCase{"a=ip(1x)", "family field is not an identifier"},
                      ErrorCase{"a=ip(x.y)", "family field is not an identifier"}));

TEST(FormatHints, ErrorOnFirstLineSaysLine1) {
  const std::string message = parse_error("// tcptrace:format a=nope");
  EXPECT_NE(message.find("line 1:"), std::string::npos) << message;
}

TEST(FormatHints, LineNumberCountsEveryLine) {
  std::string source;
  for (int i = 0; i < 11; ++i) source += "\n";
  source += "// tcptrace:format a=bogus\n";
  const std::string message = parse_error(source);
  EXPECT_NE(message.find("line 12:"), std::string::npos) << message;
}

TEST(FormatHints, FirstErrorWins) {
  const std::string message = parse_error("// tcptrace:format a=one\n// tcptrace:format b=two\n");
  EXPECT_NE(message.find("line 1"), std::string::npos) << message;
  EXPECT_NE(message.find("'a=one'"), std::string::npos) << message;
}

// ------------------------------------------------------------- name tables

TEST(TcpStateName, KernelNumbering) {
  const std::vector<std::string> expected = {"ESTABLISHED", "SYN_SENT", "SYN_RECV",   "FIN_WAIT1",    "FIN_WAIT2",
                                             "TIME_WAIT",   "CLOSE",    "CLOSE_WAIT", "LAST_ACK",     "LISTEN",
                                             "CLOSING",     "NEW_SYN_RECV", "BOUND_INACTIVE"};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(tcp_state_name(i + 1), expected[i]) << "state " << i + 1;
  }
}

TEST(TcpStateName, UnknownIsEmpty) {
  EXPECT_EQ(tcp_state_name(0), "");
  EXPECT_EQ(tcp_state_name(14), "");
  EXPECT_EQ(tcp_state_name(255), "");
  EXPECT_EQ(tcp_state_name(UINT64_MAX), "");
}

TEST(ErrnoName, CommonSocketErrors) {
  EXPECT_EQ(errno_name(111), "ECONNREFUSED");
  EXPECT_EQ(errno_name(110), "ETIMEDOUT");
  EXPECT_EQ(errno_name(104), "ECONNRESET");
  EXPECT_EQ(errno_name(113), "EHOSTUNREACH");
  EXPECT_EQ(errno_name(101), "ENETUNREACH");
  EXPECT_EQ(errno_name(98), "EADDRINUSE");
  EXPECT_EQ(errno_name(115), "EINPROGRESS");
  EXPECT_EQ(errno_name(1), "EPERM");
  EXPECT_EQ(errno_name(11), "EAGAIN");
  EXPECT_EQ(errno_name(13), "EACCES");
  EXPECT_EQ(errno_name(22), "EINVAL");
}

TEST(ErrnoName, UnknownIsEmpty) {
  EXPECT_EQ(errno_name(0), "");
  EXPECT_EQ(errno_name(9999), "");
  EXPECT_EQ(errno_name(UINT64_MAX), "");
  EXPECT_EQ(errno_name(static_cast<uint64_t>(-111)), "");  // callers pass the magnitude
}

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
TEST(ErrnoName, AgreesWithLibc) {
  size_t named = 0;
  for (int value = 0; value < 200; ++value) {
    const std::string_view name = errno_name(static_cast<uint64_t>(value));
    if (name.empty()) continue;
    ++named;
    const char* libc = strerrorname_np(value);
    ASSERT_NE(libc, nullptr) << value;
    EXPECT_EQ(name, libc) << value;
  }
  EXPECT_EQ(named, 42u);
}
#endif

}  // namespace
}  // namespace tcptrace

namespace tcptrace {
namespace {

TEST(FormatHints, OneLineBlockCommentEndsTheList) {
  auto hints = parse_format_hints("/* tcptrace:format a=hex b=tcp_state */\nint x;\n");
  ASSERT_TRUE(hints.ok()) << hints.error().message;
  ASSERT_EQ(hints->size(), 2u);
  EXPECT_EQ((*hints)[1].field, "b");
  EXPECT_EQ((*hints)[1].format, FieldFormat::tcp_state);
}

}  // namespace
}  // namespace tcptrace

namespace tcptrace {
namespace {

// The README's example program is the fixture the integration tests run;
// this keeps the two from drifting apart.
TEST(Readme, ExampleProgramIsTheTestedFixture) {
  auto read = [](const std::string& path) {
    std::ifstream file(path);
    std::ostringstream text;
    text << file.rdbuf();
    return text.str();
  };
  const std::string readme = read(std::string(TCPTRACE_SOURCE_DIR) + "/README.md");
  const std::string fixture = read(std::string(TCPTRACE_SOURCE_DIR) + "/tests/fixtures/connect_probe.bpf.c");
  ASSERT_FALSE(fixture.empty());
  EXPECT_NE(readme.find("```c\n" + fixture + "```"), std::string::npos);
}

}  // namespace
}  // namespace tcptrace
