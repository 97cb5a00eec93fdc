// The host knows no program by name: nothing under host/ or filters/ names
// a built-in program, a field of its events, one of its maps or one of its
// metrics. What a program needs, it declares (metric_declarations.h,
// program_annotations.h, format_hints.h), so a program is added as a file.
//
// Knowledge by name needs a string to look a name up with (a layout's
// field, a map, a metric), so the C++ is searched in its string literals;
// the BPF-side headers in filters/ are C a program includes, searched for
// calls on a program's maps too. Words that are the host's own documented vocabulary are
// not a program's: the filter options' names (sport, dport, pid, family),
// the default family field of ip() ("family"), the timestamp convention
// (ts_us), the format kinds (errno, hex, ...), and "kind", a key of the
// host's own --check report (of probes, metrics and output tables).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The words a program owns: the fields of its events, its maps, its output
// tables and its metrics.
std::set<std::string> words_of_program(const fs::path& path) {
  const std::string text = read_text(path);
  std::set<std::string> words;
  const std::regex struct_block(R"(struct\s+(?:event|connect_end|transition)\s*\{([^}]*)\})");
  const std::regex member(R"((\w+)\s*(\[[^\]]*\])?\s*;)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), struct_block); it != std::sregex_iterator(); ++it) {
    const std::string body = (*it)[1];
    for (auto m = std::sregex_iterator(body.begin(), body.end(), member); m != std::sregex_iterator(); ++m) {
      words.insert((*m)[1]);
    }
  }
  const std::regex table(R"(BPF_TABLE\(\s*"[^"]*"\s*,[^,]*,[^,]*,\s*(\w+))");
  const std::regex macro_map(R"(BPF_(?:HASH|ARRAY|PERCPU_ARRAY|PERCPU_HASH|HISTOGRAM|PERF_OUTPUT|RINGBUF_OUTPUT)\(\s*(\w+))");
  const std::regex output(R"(tcptrace:output\s+(\w+))");
  const std::regex metric(R"(tcptrace:metric\s+\w+\s+(\w+))");
  for (const std::regex* re : {&table, &macro_map, &output, &metric}) {
    for (auto m = std::sregex_iterator(text.begin(), text.end(), *re); m != std::sregex_iterator(); ++m) {
      words.insert((*m)[1]);
    }
  }
  for (const char* host_vocabulary : {"sport", "dport", "pid", "family", "ts_us", "errno", "hex", "string", "kind", "u8",
                                      "u16", "u32", "u64", "s32", "s64", "char", "int"}) {
    words.erase(host_vocabulary);
  }
  return words;
}

// A program's name: its file's stem.
std::string program_name(const fs::path& path) { return path.stem().stem().string(); }

struct Finding {
  std::string where;
  std::string word;
};

// Where `text` names a program or one of its words: a program name as any
// word of a string literal (prose included: "--program NAME (states, ...)"
// lists them); a field, map or metric as a whole string literal (what a
// lookup by name takes).
std::vector<Finding> findings_in(const std::string& name, const std::string& text,
                                 const std::set<std::string>& programs, const std::set<std::string>& words) {
  std::vector<Finding> found;
  size_t line = 1;
  std::string word;
  std::string literal;
  bool in_string = false;
  const auto end_word = [&]() {
    if (in_string && programs.count(word) > 0) found.push_back({name + ":" + std::to_string(line), word});
    word.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!in_string && c == '/' && i + 1 < text.size() && text[i + 1] == '/') {
      end_word();
      while (i < text.size() && text[i] != '\n') ++i;
      ++line;
      continue;
    }
    if (!in_string && c == '/' && i + 1 < text.size() && text[i + 1] == '*') {
      end_word();
      i += 2;
      while (i + 1 < text.size() && !(text[i] == '*' && text[i + 1] == '/')) line += text[i++] == '\n';
      ++i;
      continue;
    }
    if (!in_string && c == '\'' && i + 2 < text.size()) {  // a character literal: '"' is not a string
      end_word();
      i += text[i + 1] == '\\' ? 3 : 2;
      continue;
    }
    if (c == '"' && (i == 0 || text[i - 1] != '\\')) {
      end_word();
      if (in_string && words.count(literal) > 0) found.push_back({name + ":" + std::to_string(line), literal});
      literal.clear();
      in_string = !in_string;
      continue;
    }
    if (in_string) literal.push_back(c);
    const bool word_char = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (word_char) {
      word.push_back(c);
      continue;
    }
    end_word();
    if (c == '\n') ++line;
  }
  end_word();
  return found;
}

// Calls on a map by name in BPF C (NAME.lookup(...), NAME.update(...)).
std::vector<Finding> map_calls_in(const std::string& name, const std::string& text,
                                  const std::set<std::string>& words) {
  std::vector<Finding> found;
  const std::regex call(R"((\w+)\s*\.\s*(lookup|update|delete|insert|perf_submit|ringbuf_output|increment|atomic_increment|lookup_or_try_init|lookup_or_init)\s*\()");
  for (auto m = std::sregex_iterator(text.begin(), text.end(), call); m != std::sregex_iterator(); ++m) {
    if (words.count((*m)[1]) == 0) continue;
    const auto line = std::count(text.begin(), text.begin() + m->position(), '\n') + 1;
    found.push_back({name + ":" + std::to_string(line), (*m)[1]});
  }
  return found;
}

struct BuiltIn {
  std::set<std::string> programs;
  std::set<std::string> words;
};

BuiltIn built_in_programs() {
  BuiltIn built_in;
  for (const auto& entry : fs::directory_iterator(fs::path(TCPTRACE_SOURCE_DIR) / "programs")) {
    if (entry.path().extension() != ".c") continue;
    built_in.programs.insert(program_name(entry.path()));
    const std::set<std::string> mine = words_of_program(entry.path());
    built_in.words.insert(mine.begin(), mine.end());
  }
  return built_in;
}

TEST(HostKnowsNoProgram, NoProgramFieldMapOrMetricIsNamedUnderHostOrFilters) {
  const BuiltIn built_in = built_in_programs();
  // What this test looks for includes the names the metrics of states and
  // connlat were once bound by.
  for (const char* expected : {"states", "connlat", "retrans"}) {
    EXPECT_EQ(built_in.programs.count(expected), 1u) << expected;
  }
  for (const char* expected : {"oldstate", "newstate", "delta_us", "latency_us", "outcome", "skaddr", "sockets",
                               "listeners", "connects", "events", "tcptrace_tcp_connects_total", "segs", "flows",
                               "tcptrace_tcp_retransmits_total"}) {
    EXPECT_EQ(built_in.words.count(expected), 1u) << expected;
  }
  std::vector<Finding> found;
  for (const char* dir : {"host", "filters"}) {
    for (const auto& entry : fs::directory_iterator(fs::path(TCPTRACE_SOURCE_DIR) / dir)) {
      const std::string ext = entry.path().extension().string();
      if (ext != ".cpp" && ext != ".h") continue;
      // filters/tcptrace_*.h are BPF C that programs include.
      const std::string file = entry.path().filename().string();
      const bool bpf_side = std::string(dir) == "filters" && file.rfind("tcptrace_", 0) == 0;
      const std::string where = std::string(dir) + "/" + file;
      const std::string text = read_text(entry.path());
      const auto more = findings_in(where, text, built_in.programs, built_in.words);
      found.insert(found.end(), more.begin(), more.end());
      if (bpf_side) {
        const auto calls = map_calls_in(where, text, built_in.words);
        found.insert(found.end(), calls.begin(), calls.end());
      }
    }
  }
  for (const Finding& f : found) ADD_FAILURE() << f.where << " names '" << f.word << "', a built-in program's";
}

// The search itself finds what it must and skips comments.
TEST(HostKnowsNoProgram, TheSearchFindsStringsAndSkipsComments) {
  const std::set<std::string> programs = {"states"};
  const std::set<std::string> words = {"oldstate", "connects"};
  const std::string text = "// oldstate and states in a comment\n"
                           "/* connects\n in a block */ int connects = 0;\n"
                           "auto f = layout.find(\"oldstate\");\n"
                           "char quote = '\"'; const char* s = \"a connects b\"; // prose\n"
                           "const char* help = \"(states, other)\";\n";
  const auto in_strings = findings_in("x.cpp", text, programs, words);
  ASSERT_EQ(in_strings.size(), 2u);
  EXPECT_EQ(in_strings[0].where, "x.cpp:4");
  EXPECT_EQ(in_strings[0].word, "oldstate");
  EXPECT_EQ(in_strings[1].where, "x.cpp:6");
  EXPECT_EQ(in_strings[1].word, "states");
  const auto calls = map_calls_in("x.h", "int a;\nu64 *n = connects.lookup(&key);\nx->connects = 1;\n", words);
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].where, "x.h:2");
  EXPECT_EQ(calls[0].word, "connects");
}

}  // namespace
