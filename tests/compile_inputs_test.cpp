#include "compile_inputs.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

namespace tcptrace {
namespace {

CompileInputs some_inputs() {
  CompileInputs inputs;
  inputs.source_path = "/usr/share/tcptrace-bcc/programs/states.bpf.c";
  inputs.text = "TRACEPOINT_PROBE(sock, inet_sock_set_state) { return 0; }\n";
  inputs.cflags = {"-I/usr/share/tcptrace-bcc/include", "-DTCPTRACE_RINGBUF=1"};
  inputs.tool_version = "0.1.0";
  inputs.bcc_version = "0.26.0";
  inputs.compiler_module = "/usr/lib/x86_64-linux-gnu/tcptrace-bcc/tcptrace-bcc-compiler.so 12 34 56 78";
  inputs.kernel_release = "6.1.0-56-amd64";
  inputs.kernel_build = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1";
  inputs.machine = "x86_64";
  inputs.possible_cpus = "0-1";
  inputs.headers = "match 0\n";
  inputs.tracepoint_formats = {{"sock:inet_sock_set_state", "name: inet_sock_set_state\n"}};
  return inputs;
}

TEST(CompileInputs, EveryInputChangesTheKey) {
  const std::string base = compile_cache_key(some_inputs());
  ASSERT_EQ(base.size(), 64u);
  EXPECT_EQ(compile_cache_key(some_inputs()), base);
  const std::vector<std::pair<std::string, std::function<void(CompileInputs&)>>> changes = {
      {"source path", [](CompileInputs& i) { i.source_path += "x"; }},
      {"text", [](CompileInputs& i) { i.text += " "; }},
      {"a cflag's value", [](CompileInputs& i) { i.cflags[1] = "-DTCPTRACE_RINGBUF=2"; }},
      {"one more cflag", [](CompileInputs& i) { i.cflags.push_back("-DX"); }},
      {"cflag order", [](CompileInputs& i) { std::swap(i.cflags[0], i.cflags[1]); }},
      {"tool version", [](CompileInputs& i) { i.tool_version = "0.1.1"; }},
      {"bcc version", [](CompileInputs& i) { i.bcc_version = "0.26.1"; }},
      {"compiler module", [](CompileInputs& i) { i.compiler_module += "9"; }},
      {"kernel release", [](CompileInputs& i) { i.kernel_release = "6.1.0-57-amd64"; }},
      {"kernel build", [](CompileInputs& i) { i.kernel_build += " "; }},
      {"machine", [](CompileInputs& i) { i.machine = "aarch64"; }},
      {"possible cpus", [](CompileInputs& i) { i.possible_cpus = "0-3"; }},
      {"headers", [](CompileInputs& i) { i.headers = "match 3\n"; }},
      {"a tracepoint's format", [](CompileInputs& i) { i.tracepoint_formats[0].second += "x"; }},
      {"a tracepoint's name", [](CompileInputs& i) { i.tracepoint_formats[0].first += "x"; }},
      {"one more tracepoint", [](CompileInputs& i) { i.tracepoint_formats.emplace_back("tcp:tcp_probe", ""); }},
  };
  std::set<std::string> keys = {base};
  for (const auto& [what, change] : changes) {
    CompileInputs inputs = some_inputs();
    change(inputs);
    EXPECT_TRUE(keys.insert(compile_cache_key(inputs)).second) << what << " does not change the key";
  }
}

TEST(CompileInputs, ValuesDoNotRunIntoEachOther) {
  CompileInputs a = some_inputs();
  CompileInputs b = some_inputs();
  a.cflags = {"-DA", "B"};
  b.cflags = {"-DAB"};
  EXPECT_NE(compile_cache_key(a), compile_cache_key(b));
  a = some_inputs();
  b = some_inputs();
  a.kernel_release = "6.1";
  a.kernel_build = "0";
  b.kernel_release = "6.";
  b.kernel_build = "10";
  EXPECT_NE(compile_cache_key(a), compile_cache_key(b));
}

TEST(CompileInputs, HeaderTreesInTheirOrder) {
  HeaderChoice one;
  one.match = HeaderMatch::fallback;
  one.tree = HeaderTree{"6.1.0-56-amd64", "/usr/src/linux-headers-6.1.0-56-amd64",
                        "/usr/src/linux-headers-6.1.0-56-common"};
  HeaderChoice two = one;
  two.alternatives.push_back(HeaderTree{"6.1.0-56-cloud-amd64", "/usr/src/a", "/usr/src/b"});
  HeaderChoice exact;
  EXPECT_NE(describe_header_trees(one), describe_header_trees(two));
  EXPECT_NE(describe_header_trees(one), describe_header_trees(exact));
  HeaderChoice chosen = one;
  chosen.match = HeaderMatch::chosen;
  EXPECT_NE(describe_header_trees(one), describe_header_trees(chosen));
}

TEST(CompileInputs, TracepointFormatsFromTheGivenRoot) {
  char dir[] = "/tmp/tcptrace-formats-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::filesystem::path root(dir);
  std::filesystem::create_directories(root / "events/sock/inet_sock_set_state");
  std::ofstream(root / "events/sock/inet_sock_set_state/format") << "name: inet_sock_set_state\nID: 1\n";
  const std::string text =
      "TRACEPOINT_PROBE(sock, inet_sock_set_state) { return 0; }\n"
      "TRACEPOINT_PROBE(tcp, tcp_nonexistent_event) { return 0; }\n";
  const auto formats = tracepoint_formats(text, std::string(dir));
  ASSERT_EQ(formats.size(), 2u);
  EXPECT_EQ(formats[0].first, "sock:inet_sock_set_state");
  EXPECT_EQ(formats[0].second, "name: inet_sock_set_state\nID: 1\n");
  EXPECT_EQ(formats[1].first, "tcp:tcp_nonexistent_event");
  EXPECT_EQ(formats[1].second, "");
  std::filesystem::remove_all(root);
}

TEST(CompileInputs, DependencyFileAsClangWritesIt) {
  const std::string text =
      "main.o: /virtual/main.c include/linux/kconfig.h \\\n"
      "  include/generated/autoconf.h /virtual/include/bcc/bpf.h \\\n"
      "  /home/me/my\\ headers/filter.h /opt/a$$b.h\n";
  const std::vector<std::string> expected = {"/virtual/main.c",     "include/linux/kconfig.h",
                                             "include/generated/autoconf.h", "/virtual/include/bcc/bpf.h",
                                             "/home/me/my headers/filter.h", "/opt/a$b.h"};
  EXPECT_EQ(parse_dependency_file(text), expected);
  EXPECT_TRUE(parse_dependency_file("").empty());
  EXPECT_TRUE(parse_dependency_file("main.o:\n").empty());
  // CRLF line ends.
  EXPECT_EQ(parse_dependency_file("main.o: a.h \\\r\n b.h\r\n"), (std::vector<std::string>{"a.h", "b.h"}));
}

}  // namespace
}  // namespace tcptrace
