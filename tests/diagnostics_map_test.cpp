#include "diagnostics_map.h"

#include <gtest/gtest.h>

namespace tcptrace {
namespace {

// What clang printed here for an error on line 4 of a file whose probe
// starts on line 3: BCC had inserted the 14-line tracepoint struct above it.
TEST(DiagnosticsMap, ShiftedLineIsFoundByItsText) {
  const std::string source =
      "BPF_PERF_OUTPUT(events);\n"
      "struct ev { u32 pid; };\n"
      "TRACEPOINT_PROBE(sock, inet_sock_set_state) {\n"
      "    struct ev e = {}; e.pid = undefined_variable;\n"
      "    return 0;\n"
      "}\n";
  const std::string clang =
      "/virtual/main.c:18:31: error: use of undeclared identifier 'undefined_variable'\n"
      "    struct ev e = {}; e.pid = undefined_variable;\n"
      "                              ^\n"
      "1 error generated.\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, source, "/home/me/p.bpf.c"),
            "/home/me/p.bpf.c:4:31: error: use of undeclared identifier 'undefined_variable'\n"
            "    struct ev e = {}; e.pid = undefined_variable;\n"
            "                              ^\n"
            "1 error generated.\n");
}

TEST(DiagnosticsMap, UnshiftedLinesStay) {
  const std::string source = "int x = ;\n";
  const std::string clang = "/virtual/main.c:1:9: error: expected expression\nint x = ;\n        ^\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, source, "p.c"),
            "p.c:1:9: error: expected expression\nint x = ;\n        ^\n");
}

TEST(DiagnosticsMap, RepeatedLinesPreferTheKnownShift) {
  // "return 0;" stands on lines 3 and 7; the first diagnostic fixes the
  // shift at 10, so the second one (reported at 17) is line 7.
  const std::string source = "a\nb\n    return 0;\nunique_line;\nc\nd\n    return 0;\n";
  const std::string clang =
      "/virtual/main.c:14:1: warning: w1\nunique_line;\n^\n"
      "/virtual/main.c:17:5: warning: w2\n    return 0;\n    ^\n";
  const std::string mapped = map_diagnostics_to_source(clang, source, "p.c");
  EXPECT_NE(mapped.find("p.c:4:1: warning: w1"), std::string::npos) << mapped;
  EXPECT_NE(mapped.find("p.c:7:5: warning: w2"), std::string::npos) << mapped;
}

TEST(DiagnosticsMap, LocationWithoutSnippetKeepsTheLastShift) {
  const std::string source = "x;\ny;\n";
  const std::string clang =
      "/virtual/main.c:12:1: error: e1\ny;\n^\n"
      "/virtual/main.c:15:3: note: n1\n"
      "/virtual/main.c:16:3: note: n2\n";
  const std::string mapped = map_diagnostics_to_source(clang, source, "p.c");
  EXPECT_NE(mapped.find("p.c:2:1: error: e1"), std::string::npos) << mapped;
  EXPECT_NE(mapped.find("p.c:5:3: note: n1"), std::string::npos) << mapped;
  EXPECT_NE(mapped.find("p.c:6:3: note: n2"), std::string::npos) << mapped;
}

TEST(DiagnosticsMap, OtherFilesAndTextPassThrough) {
  const std::string clang =
      "/usr/src/linux-headers/include/linux/x.h:3:1: warning: w\n"
      "In file included from /virtual/include/bcc/helpers.h:1:\n"
      "plain text\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, "", "p.c"), clang);
}

}  // namespace
}  // namespace tcptrace
