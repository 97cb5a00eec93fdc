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
  EXPECT_EQ(map_diagnostics_to_source(clang, source, "/home/me/p.bpf.c", {}),
            "/home/me/p.bpf.c:4:31: error: use of undeclared identifier 'undefined_variable'\n"
            "    struct ev e = {}; e.pid = undefined_variable;\n"
            "                              ^\n"
            "1 error generated.\n");
}

TEST(DiagnosticsMap, UnshiftedLinesStay) {
  const std::string source = "int x = ;\n";
  const std::string clang = "/virtual/main.c:1:9: error: expected expression\nint x = ;\n        ^\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, source, "p.c", {}),
            "p.c:1:9: error: expected expression\nint x = ;\n        ^\n");
}

TEST(DiagnosticsMap, RepeatedLinesPreferTheKnownShift) {
  // "return 0;" stands on lines 3 and 7; the first diagnostic fixes the
  // shift at 10, so the second one (reported at 17) is line 7.
  const std::string source = "a\nb\n    return 0;\nunique_line;\nc\nd\n    return 0;\n";
  const std::string clang =
      "/virtual/main.c:14:1: warning: w1\nunique_line;\n^\n"
      "/virtual/main.c:17:5: warning: w2\n    return 0;\n    ^\n";
  const std::string mapped = map_diagnostics_to_source(clang, source, "p.c", {});
  EXPECT_NE(mapped.find("p.c:4:1: warning: w1"), std::string::npos) << mapped;
  EXPECT_NE(mapped.find("p.c:7:5: warning: w2"), std::string::npos) << mapped;
}

TEST(DiagnosticsMap, LocationWithoutSnippetKeepsTheLastShift) {
  const std::string source = "x;\ny;\n";
  const std::string clang =
      "/virtual/main.c:12:1: error: e1\ny;\n^\n"
      "/virtual/main.c:15:3: note: n1\n"
      "/virtual/main.c:16:3: note: n2\n";
  const std::string mapped = map_diagnostics_to_source(clang, source, "p.c", {});
  EXPECT_NE(mapped.find("p.c:2:1: error: e1"), std::string::npos) << mapped;
  EXPECT_NE(mapped.find("p.c:5:3: note: n1"), std::string::npos) << mapped;
  EXPECT_NE(mapped.find("p.c:6:3: note: n2"), std::string::npos) << mapped;
}

TEST(DiagnosticsMap, OtherFilesAndTextPassThrough) {
  const std::string clang =
      "/usr/src/linux-headers/include/linux/x.h:3:1: warning: w\n"
      "In file included from /virtual/include/bcc/helpers.h:1:\n"
      "plain text\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, "", "p.c", {}), clang);
}

// Kernel style: tab indentation, and a tab after code. clang echoes the
// line with each tab expanded to the next multiple of 8 bytes, the column
// still counts bytes of the file.
TEST(DiagnosticsMap, TabIndentedLineIsFoundByHowClangEchoesIt) {
  const std::string source =
      "BPF_PERF_OUTPUT(values);\n"
      "TRACEPOINT_PROBE(syscalls, sys_enter_connect)\n"
      "{\n"
      "\tstruct value v = {};\tv.pid = missing;\n"
      "}\n";
  const std::string clang =
      "/virtual/main.c:15:31: error: use of undeclared identifier 'missing'\n"
      "        struct value v = {};    v.pid = missing;\n"
      "                                        ^\n"
      "1 error generated.\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, source, "t.bpf.c", {}),
            "t.bpf.c:4:31: error: use of undeclared identifier 'missing'\n"
            "        struct value v = {};    v.pid = missing;\n"
            "                                        ^\n"
            "1 error generated.\n");
}

// What clang 14 printed for these lines (bcc 0.26): a two-byte character
// counts two bytes towards the next tab stop; control characters and bytes
// that are not UTF-8 are spelled out.
TEST(DiagnosticsMap, ClangSnippetExpandsTabsAndSpellsOutUnprintables) {
  EXPECT_EQ(clang_snippet("\tv.pid = a_one;\t/* c */"), "        v.pid = a_one;  /* c */");
  EXPECT_EQ(clang_snippet("\t/* \xc3\xa9 */\tv.pid = a_seven;"), "        /* \xc3\xa9 */        v.pid = a_seven;");
  EXPECT_EQ(clang_snippet("\t/*\x01*/\tv.pid = a_eight;"), "        /*<U+0001>*/   v.pid = a_eight;");
  EXPECT_EQ(clang_snippet("v = 1; /* \x01 \x0c \x7f \xc2\x85 */"), "v = 1; /* <U+0001> <U+000C> <U+007F> <U+0085> */");
  EXPECT_EQ(clang_snippet("\tv.pid = a_six; /* \xff bad */"), "        v.pid = a_six; /* <FF> bad */");
  EXPECT_EQ(clang_snippet("  \t v.pid = a_three;   "), "         v.pid = a_three;   ");
}

// Two probes whose tracepoint structs BCC made 11 and 9 lines long: lines 8
// and 15 of the file are reported as 19 and 35. The lines clang echoes are
// not in the file (as when clang escapes a character clang_snippet copies),
// so only the inserted lines place them.
TEST(DiagnosticsMap, InsertedLinesPredictEveryProbe) {
  std::string source;
  for (int line = 1; line <= 18; ++line) source += "line" + std::to_string(line) + ";\n";
  const std::vector<InsertedLines> inserted = {{6, 11}, {12, 9}};
  const std::string clang =
      "/virtual/main.c:19:5: error: e1\nnot in the file\n    ^\n"
      "/virtual/main.c:35:5: error: e2\nnot in the file either\n    ^\n"
      "/virtual/main.c:36:1: note: n1\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, source, "p.c", inserted),
            "p.c:8:5: error: e1\nnot in the file\n    ^\n"
            "p.c:15:5: error: e2\nnot in the file either\n    ^\n"
            "p.c:16:1: note: n1\n");
}

// The error is on line 11; the second probe repeats its text on line 19,
// which also lies above the reported line 22. The lines BCC inserted say
// which one it is.
TEST(DiagnosticsMap, RepeatedTextBelowIsNotTakenForTheErrorLine) {
  std::string source;
  for (int line = 1; line <= 22; ++line) {
    source += line == 11 || line == 19 ? "    v.pid = caller;\n" : "line" + std::to_string(line) + ";\n";
  }
  const std::string clang =
      "/virtual/main.c:22:13: error: use of undeclared identifier 'caller'\n"
      "    v.pid = caller;\n"
      "            ^\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, source, "p.c", {{8, 11}, {15, 9}}),
            "p.c:11:13: error: use of undeclared identifier 'caller'\n"
            "    v.pid = caller;\n"
            "            ^\n");
}

// A probe the scan cannot see (written without TRACEPOINT_PROBE) shifts the
// lines below it: the echoed text finds the line, and later diagnostics
// without one keep that correction.
TEST(DiagnosticsMap, EchoedTextCorrectsAMissedInsertion) {
  const std::string source = "a;\nb;\nc;\nd;\ne;\nf;\n";
  const std::string clang =
      "/virtual/main.c:12:1: error: e1\nd;\n^\n"
      "/virtual/main.c:14:2: note: n1\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, source, "p.c", {{2, 3}}),
            "p.c:4:1: error: e1\nd;\n^\n"
            "p.c:6:2: note: n1\n");
}

// A location inside the struct BCC inserted points at its probe.
TEST(DiagnosticsMap, LocationInsideAnInsertedStructIsItsProbe) {
  const std::string source = "a;\nTRACEPOINT_PROBE(x, y)\n{\n}\n";
  const std::string clang = "/virtual/main.c:4:2: error: e\n\tchar __pad_12;\n\t^\n";
  EXPECT_EQ(map_diagnostics_to_source(clang, source, "p.c", {{2, 5}}).substr(0, 19), "p.c:2:2: error: e\n\t");
}

TEST(DiagnosticsMap, TracepointProbeLinesAreFound) {
  const std::string source =
      "// TRACEPOINT_PROBE(sock, in_a_comment)\n"
      "TRACEPOINT_PROBE(sock, inet_sock_set_state)\n"
      "{\n"
      "}\n"
      "\tTRACEPOINT_PROBE ( syscalls , sys_enter_connect ) {\n"
      "RAW_TRACEPOINT_PROBE(sched_switch)\n"
      "TRACEPOINT_PROBE(sock)\n";
  const std::vector<TracepointProbeLine> probes = tracepoint_probe_lines(source);
  ASSERT_EQ(probes.size(), 2u);
  EXPECT_EQ(probes[0].line, 2u);
  EXPECT_EQ(probes[0].category, "sock");
  EXPECT_EQ(probes[0].event, "inet_sock_set_state");
  EXPECT_EQ(probes[1].line, 5u);
  EXPECT_EQ(probes[1].category, "syscalls");
  EXPECT_EQ(probes[1].event, "sys_enter_connect");
}

// What BCC printed on Linux 6.18 for tests/fixtures/verifier_reject.bpf.c
// (shortened): its source lines count lines of the text BCC compiled last,
// which has more inserted than the tracepoint struct, and the map lookup is
// in BCC's words, not the user's.
TEST(DiagnosticsMap, VerifierLogPointsAtTheUsersLines) {
  const std::string source =
      "struct value {\n"
      "\tu32 pid;\n"
      "};\n"
      "BPF_HASH(counts, u32, u32);\n"
      "TRACEPOINT_PROBE(syscalls, sys_enter_connect)\n"
      "{\n"
      "\tstruct value v = {};\n"
      "\tu32 key = 0;\n"
      "\tu32 *count = counts.lookup(&key);\n"
      "\tv.pid = *count;\n"
      "\treturn 0;\n"
      "}\n";
  const std::string log =
      "bpf: Failed to load program: Permission denied\n"
      "0: R1=ctx() R10=fp0\n"
      "; TRACEPOINT_PROBE(syscalls, sys_enter_connect) @ main.c:30\n"
      "; u32 key = 0; @ main.c:34\n"
      "; u32 *count = bpf_map_lookup_elem((void *)bpf_pseudo_fd(1, -2), &key); @ main.c:35\n"
      ";  @ main.c:0\n"
      "; v.pid = *count; @ main.c:36\n"
      "8: (61) r1 = *(u32 *)(r0 +0)\n"
      "R0 invalid mem access 'map_value_or_null'\n";
  const MappedVerifierLog mapped = map_verifier_log_to_source(log, source, "v.bpf.c");
  EXPECT_EQ(mapped.text,
            "bpf: Failed to load program: Permission denied\n"
            "0: R1=ctx() R10=fp0\n"
            "; TRACEPOINT_PROBE(syscalls, sys_enter_connect) @ v.bpf.c:5\n"
            "; u32 key = 0; @ v.bpf.c:8\n"
            "; u32 *count = bpf_map_lookup_elem((void *)bpf_pseudo_fd(1, -2), &key);\n"
            "; \n"
            "; v.pid = *count; @ v.bpf.c:10\n"
            "8: (61) r1 = *(u32 *)(r0 +0)\n"
            "R0 invalid mem access 'map_value_or_null'\n");
  EXPECT_EQ(mapped.failure_line, std::optional<size_t>(10));
}

// The same text in two probes, on lines 3 and 9; the verifier walked the
// second probe. With line numbers, the shift the log's earlier lines showed
// picks line 9; older kernels print none, and then the first such line
// below the previous one found does.
TEST(DiagnosticsMap, VerifierLogRepeatedTextFollowsTheWalk) {
  const std::string source =
      "TRACEPOINT_PROBE(a, b)\n{\n\tv.pid = *count;\n}\n"
      "TRACEPOINT_PROBE(a, c)\n{\n\tu32 key = 0;\n\tu32 other = 1;\n\tv.pid = *count;\n}\n";
  const MappedVerifierLog numbered = map_verifier_log_to_source(
      "; TRACEPOINT_PROBE(a, c) @ main.c:30\n; v.pid = *count; @ main.c:34\n", source, "p.c");
  EXPECT_EQ(numbered.text, "; TRACEPOINT_PROBE(a, c) @ p.c:5\n; v.pid = *count; @ p.c:9\n");
  EXPECT_EQ(numbered.failure_line, std::optional<size_t>(9));
  const MappedVerifierLog unnumbered =
      map_verifier_log_to_source("; TRACEPOINT_PROBE(a, c)\n; v.pid = *count;\n", source, "p.c");
  EXPECT_EQ(unnumbered.text, "; TRACEPOINT_PROBE(a, c) @ p.c:5\n; v.pid = *count; @ p.c:9\n");
  EXPECT_EQ(unnumbered.failure_line, std::optional<size_t>(9));
}

// The last source line in the log is BCC's rewriting of a map call: no
// line is claimed.
TEST(DiagnosticsMap, VerifierStopInRewrittenTextHasNoLine) {
  const MappedVerifierLog mapped = map_verifier_log_to_source(
      "; u32 key = 0; @ main.c:34\n; u32 *c = bpf_map_lookup_elem((void *)bpf_pseudo_fd(1, -2), &key); @ main.c:35\n"
      "R1 type=scalar expected=map_ptr\n",
      "u32 key = 0;\nu32 *c = counts.lookup(&key);\n", "p.c");
  EXPECT_EQ(mapped.text,
            "; u32 key = 0; @ p.c:1\n; u32 *c = bpf_map_lookup_elem((void *)bpf_pseudo_fd(1, -2), &key);\n"
            "R1 type=scalar expected=map_ptr\n");
  EXPECT_EQ(mapped.failure_line, std::nullopt);
}

}  // namespace
}  // namespace tcptrace
