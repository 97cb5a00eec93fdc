// User-written programs (--program-file): their own structs decoded by the
// same host code as the built-in programs, -D macros, ring buffers, several
// output tables, nested structs, diagnostics pointing at the user's file,
// and --watch swapping to an edited copy during a run.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "attach_support.h"
#include "kernel_btf.h"
#include "loopback.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return std::string(TCPTRACE_SOURCE_DIR) + "/tests/fixtures/" + name; }

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

std::unique_ptr<ToolProcess> start_file(const std::string& path, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--program-file", path};
  args.insert(args.end(), extra.begin(), extra.end());
  return start_ready(std::move(args));
}

// Connects to a fresh loopback listener; returns {client fd, port}.
std::pair<int, uint16_t> connect_once(Socket& listener, Socket& client) {
  listener = bind_loopback(AF_INET);
  start_listening(listener);
  client = connect_loopback(AF_INET, listener.local_port());
  return {client.fd(), listener.local_port()};
}

std::vector<json> mine(const std::vector<json>& events) {
  std::vector<json> out;
  for (const json& e : events) {
    if (e.contains("pid") && e.at("pid") == getpid()) out.push_back(e);
  }
  return out;
}

TEST(ProgramFile, UserStructDecodedWithHintsAndMacros) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  Socket listener, client;
  auto tool = start_file(fixture("connect_probe.bpf.c"));
  ASSERT_TRUE(tool);
  const auto [fd, port] = connect_once(listener, client);
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  const std::vector<json> calls = mine(tool->events());
  ASSERT_EQ(calls.size(), 1u) << tool->stdout_text();
  const json& c = calls[0];
  std::set<std::string> keys;
  for (const auto& item : c.items()) keys.insert(item.key());
  EXPECT_EQ(keys, (std::set<std::string>{"time", "ts_us", "pid", "comm", "fd", "family", "dport", "daddr"}));
  EXPECT_EQ(c.at("comm"), own_comm());
  EXPECT_EQ(c.at("fd"), fd);
  EXPECT_EQ(c.at("family"), AF_INET);
  EXPECT_EQ(c.at("dport"), port);
  EXPECT_EQ(c.at("daddr"), "127.0.0.1");  // the ip(family) hint of the program

  // -D MIN_FD above any descriptor we have: the program reports nothing.
  auto filtered = start_file(fixture("connect_probe.bpf.c"), {"-D", "MIN_FD=1000000"});
  ASSERT_TRUE(filtered);
  Socket listener2, client2;
  connect_once(listener2, client2);
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(filtered->stop(SIGINT), 0);
  EXPECT_TRUE(mine(filtered->events()).empty()) << filtered->stdout_text();
}

// A user program that declares "tcptrace:seed tcp-listeners=MAP" gets the
// owners of listeners older than the tracer, like states does: the server
// here listens in its own process before the tool starts.
TEST(ProgramFile, SeededListenerOwnersReachUserPrograms) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ToolProcess server({"python3"}, {"--mode", "single"},
                     std::string(TCPTRACE_SOURCE_DIR) + "/tests/integration/tcp_server.py");
  ASSERT_TRUE(server.wait_for_lines(1, 20s)) << server.stderr_text();
  const json listening = json::parse(server.stdout_lines().at(0));
  const uint16_t port = listening.at("port");
  auto tool = start_file(fixture("accept_owner.bpf.c"));
  ASSERT_TRUE(tool);
  EXPECT_NE(tool->stderr_text().find("seeded socket owners from the socket table"), std::string::npos)
      << tool->stderr_text();
  for (int i = 0; i < 2; ++i) {
    Socket client = connect_loopback(AF_INET, port);
    ASSERT_GE(client.fd(), 0);
    char line[16];
    EXPECT_GT(recv(client.fd(), line, sizeof line, 0), 0);  // accepted: the server sent its pid
  }
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  int accepted = 0;
  for (const json& e : tool->events()) {
    if (e.at("port") != port) continue;
    ++accepted;
    EXPECT_EQ(e.at("pid"), listening.at("master")) << e;
    EXPECT_EQ(e.at("comm"), "srv-single") << e;
    EXPECT_EQ(e.at("laddr"), "127.0.0.1") << e;
    EXPECT_EQ(e.at("raddr"), "127.0.0.1") << e;
    EXPECT_GT(e.at("netns").get<uint64_t>(), 0u) << "the namespace offsets came from BTF";
  }
  EXPECT_EQ(accepted, 2);
  server.stop(SIGTERM);
}

TEST(ProgramFile, RingBufferOutput) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_file(fixture("ringbuf_probe.bpf.c"));
  ASSERT_TRUE(tool);
  Socket listener, client;
  const auto [fd, port] = connect_once(listener, client);
  (void)port;
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  const std::vector<json> calls = mine(tool->events());
  ASSERT_EQ(calls.size(), 1u) << tool->stdout_text();
  EXPECT_EQ(calls[0].at("fd"), fd);
  EXPECT_GE(calls[0].at("counter").get<uint64_t>(), 1u);
  EXPECT_TRUE(calls[0].contains("time")) << "the host adds time even without ts_us";
}

TEST(ProgramFile, TwoTablesAndANestedStruct) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_file(fixture("two_tables.bpf.c"));
  ASSERT_TRUE(tool);
  Socket listener, client;
  const auto [fd, port] = connect_once(listener, client);
  (void)port;
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  bool saw_entry = false, saw_exit = false;
  for (const json& e : tool->events()) {
    ASSERT_TRUE(e.contains("event")) << e;
    if (e.at("event") == "entries" && e.at("caller").at("pid") == getpid()) {
      saw_entry = true;
      EXPECT_EQ(e.at("caller").at("comm"), own_comm()) << e;
      EXPECT_EQ(e.at("fd"), fd) << e;
    }
    if (e.at("event") == "exits" && e.at("pid") == getpid()) {
      saw_exit = true;
      EXPECT_EQ(e.at("ret"), 0) << e;
    }
  }
  EXPECT_TRUE(saw_entry) << tool->stdout_text();
  EXPECT_TRUE(saw_exit) << tool->stdout_text();
}

// tcptrace:offsets: the socket's family read at the offset the host took
// from the kernel's BTF is the family the record gives, for both families;
// --check shows each macro's value, and why one is not defined.
TEST(ProgramFile, KernelOffsetsFromBtfReadTheRightMember) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto btf = KernelBtf::load();
  if (!btf.ok()) {
    if (running_in_ci()) FAIL() << "CI=true: " << btf.error().message;
    GTEST_SKIP() << btf.error().message;
  }
  auto expected = btf->member_offset("sock", "__sk_common.skc_family");
  ASSERT_TRUE(expected.ok()) << expected.error().message;
  const std::string path = fixture("kernel_offsets.bpf.c");
  {
    ToolProcess check({"--program-file", path, "--check"});
    ASSERT_EQ(check.wait_exit(scaled(120s)), 0) << check.stderr_text();
    const json offsets = json::parse(check.stdout_text()).at("offsets");
    EXPECT_EQ(offsets, json::parse(R"([{"name":"TCPTRACE_OFFSET_FAMILY","member":"sock.__sk_common.skc_family","offset":)" +
                                   std::to_string(*expected) +
                                   R"(},{"name":"TCPTRACE_OFFSET_NOT_THERE","member":"sock.tcptrace_no_such_member",
                                   "offset":null,"missing":"struct sock has no member tcptrace_no_such_member at a whole byte"}])"));
  }
  auto tool = start_file(path, {"-D", "TEST_PID=" + std::to_string(getpid())});
  ASSERT_TRUE(tool);
  for (int family : {AF_INET, AF_INET6}) {
    Socket listener = bind_loopback(family);
    start_listening(listener);
    Socket client = connect_loopback(family, listener.local_port());
    ASSERT_GE(client.fd(), 0);
  }
  ASSERT_TRUE(tool->wait_for_lines(2, scaled(10s))) << tool->stdout_text();
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  std::set<int> families;
  for (const json& e : tool->events()) {
    EXPECT_EQ(e.at("read_family"), e.at("record_family")) << e;
    EXPECT_EQ(e.at("offset"), *expected) << e;
    families.insert(e.at("read_family").get<int>());
  }
  EXPECT_EQ(families, (std::set<int>{AF_INET, AF_INET6}));
}

TEST(ProgramFile, CheckNamesTheLineOfASyntaxError) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const std::string path = fixture("syntax_error.bpf.c");
  ToolProcess tool({"--program-file", path, "--check"});
  EXPECT_EQ(tool.wait_exit(120s), 1);
  const std::string err = tool.stderr_text();
  // Line 12 of the file, although BCC compiled it as line 12 + the size of
  // the tracepoint struct it inserted above the probe.
  EXPECT_NE(err.find(path + ":12:"), std::string::npos) << err;
  EXPECT_NE(err.find("not_declared_anywhere"), std::string::npos) << err;
  EXPECT_EQ(err.find("/virtual/main.c"), std::string::npos) << err;
  EXPECT_EQ(tool.stdout_text(), "");
}

// stderr without the notice about the kernel header tree, which this machine
// may print first: what is left is the diagnostics and the tool's own line.
std::string without_header_notice(const std::string& err) {
  std::string out;
  std::istringstream lines(err);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("tcptrace-bcc: using kernel headers ", 0) == 0) continue;
    out += line + "\n";
  }
  return out;
}

// Compiler diagnostics name the line of the user's file, whatever BCC
// inserted above it (each probe's tracepoint struct) and however the file is
// indented. The whole of stderr is compared: clang's line, the source line it
// echoes (tabs expanded to 8 columns) and its caret.
struct CompileErrorCase {
  std::string name;
  std::string fixture;
  std::string diagnostics;  // "FILE" stands for the fixture's path
};

std::ostream& operator<<(std::ostream& os, const CompileErrorCase& c) { return os << c.name; }

class CompileErrorAtTheUsersLine : public ::testing::TestWithParam<CompileErrorCase> {};

TEST_P(CompileErrorAtTheUsersLine, ExactLocationAndStatus) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const CompileErrorCase& c = GetParam();
  const std::string path = fixture(c.fixture);
  std::string expected = c.diagnostics;
  for (size_t at = 0; (at = expected.find("FILE", at)) != std::string::npos; at += path.size()) {
    expected.replace(at, 4, path);
  }
  expected += "tcptrace-bcc: " + path + " did not compile (diagnostics above)\n";
  ToolProcess tool({"--program-file", path, "--check"});
  EXPECT_EQ(tool.wait_exit(120s), 1);
  EXPECT_EQ(without_header_notice(tool.stderr_text()), expected);
  EXPECT_EQ(tool.stdout_text(), "");
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, CompileErrorAtTheUsersLine,
    ::testing::Values(
        // Lines 8 and 15, one in each probe; line 8 also has a tab after code.
        CompileErrorCase{"tabs", "tabs.bpf.c",
                         "FILE:8:31: error: use of undeclared identifier 'missing_in_enter'\n"
                         "        struct value v = {};    v.pid = missing_in_enter;\n"
                         "                                        ^\n"
                         "FILE:15:10: error: use of undeclared identifier 'missing_in_exit'\n"
                         "        v.pid = missing_in_exit;\n"
                         "                ^\n"
                         "2 errors generated.\n"},
        // The only error, in the second probe; the first probe has the same
        // line (11) where it compiles.
        CompileErrorCase{"second_probe", "second_probe.bpf.c",
                         "FILE:18:10: error: use of undeclared identifier 'caller'\n"
                         "        v.pid = caller;\n"
                         "                ^\n"
                         "1 error generated.\n"},
        // Line 11; the second probe has the same text on line 19.
        CompileErrorCase{"repeated_line", "repeated_line.bpf.c",
                         "FILE:11:13: error: use of undeclared identifier 'caller'\n"
                         "    v.pid = caller;\n"
                         "            ^\n"
                         "1 error generated.\n"}),
    [](const ::testing::TestParamInfo<CompileErrorCase>& info) { return info.param.name; });

// A program that compiles but that the verifier refuses: the verifier's log
// names the source line of the instruction it stopped at, and both the log
// and the tool's own last line point at that line of the user's file.
TEST(ProgramFile, VerifierRejectionNamesTheUsersLine) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const std::string path = fixture("verifier_reject.bpf.c");
  ToolProcess tool({"--program-file", path, "--check"});
  EXPECT_EQ(tool.wait_exit(120s), 1);
  const std::string err = tool.stderr_text();
  EXPECT_EQ(tool.stdout_text(), "");
  EXPECT_NE(err.find("\n; v.pid = *count; @ " + path + ":13\n"), std::string::npos) << err;
  EXPECT_EQ(err.find("main.c"), std::string::npos) << err;
  const size_t last = err.rfind('\n', err.size() - 2);
  const std::string last_line = err.substr(last == std::string::npos ? 0 : last + 1);
  const std::string prefix = "tcptrace-bcc: " + path +
                             ":13: the kernel refused to load tracepoint syscalls:sys_enter_connect "
                             "(tracepoint__syscalls__sys_enter_connect): Permission denied; verifier: ";
  EXPECT_EQ(last_line.substr(0, prefix.size()), prefix) << err;
  EXPECT_NE(last_line.find("R0 invalid mem access 'map_value_or_null'"), std::string::npos) << last_line;
}

TEST(ProgramFile, CheckPrintsPlanAndFields) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ToolProcess tool({"--program-file", fixture("two_tables.bpf.c"), "--check"});
  ASSERT_EQ(tool.wait_exit(120s), 0) << tool.stderr_text();
  const std::vector<json> reports = tool.events();
  ASSERT_EQ(reports.size(), 1u);
  const json& r = reports[0];
  EXPECT_EQ(r.at("program"), "two_tables");
  EXPECT_EQ(r.at("probes").size(), 2u);
  std::map<std::string, json> outputs;
  for (const json& o : r.at("outputs")) outputs[o.at("table").get<std::string>()] = o;
  ASSERT_EQ(outputs.count("entries"), 1u);
  const json& caller = outputs["entries"].at("fields").at(0);
  EXPECT_EQ(caller.at("name"), "caller");
  EXPECT_EQ(caller.at("size"), 20);
  EXPECT_EQ(caller.at("fields").size(), 2u);
  EXPECT_EQ(outputs["exits"].at("size"), 8);
}

TEST(ProgramFile, PrintSourceShowsFlagsAndText) {
  const std::string path = fixture("connect_probe.bpf.c");
  ToolProcess tool({"--program-file", path, "--print-source", "-D", "MIN_FD=3"});
  ASSERT_EQ(tool.wait_exit(60s), 0) << tool.stderr_text();
  const std::string out = tool.stdout_text();
  EXPECT_NE(out.find("//   -DMIN_FD=3\n"), std::string::npos) << out;
  EXPECT_NE(out.find(read_text(path)), std::string::npos);
}

TEST(ProgramFile, BadFilesAreUsageErrors) {
  const fs::path dir = fs::temp_directory_path() / ("tcptrace-test-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "empty.bpf.c").close();
  for (const auto& [path, words] : std::vector<std::pair<std::string, std::string>>{
           {(dir / "missing.bpf.c").string(), "does not exist"},
           {dir.string(), "is a directory"},
           {(dir / "empty.bpf.c").string(), "is empty"}}) {
    ToolProcess tool({"--program-file", path});
    EXPECT_EQ(tool.wait_exit(60s), 2) << path;
    EXPECT_NE(tool.stderr_text().find(words), std::string::npos) << tool.stderr_text();
  }
  fs::remove_all(dir);
}

// A user program's kprobe on a kernel with kprobes: one event per IPv4
// connect, from the process that connects.
TEST(ProgramFile, KprobeProgramReportsEachConnect) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  if (!kernel_has_kprobes()) TCPTRACE_CANNOT_ATTACH("kprobe", "this kernel has no kprobe support");
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  auto tool = start_file(fixture("kprobe_probe.bpf.c"));
  ASSERT_TRUE(tool);
  for (int i = 0; i < 3; ++i) ASSERT_GE(connect_loopback(AF_INET, listener.local_port()).fd(), 0);
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  EXPECT_EQ(mine(tool->events()).size(), 3u) << tool->stdout_text();
}

// The same program where the kernel has no kprobes: the tool names the
// probe and the reason and exits 1.
TEST(ProgramFile, KprobeWithoutKernelSupportIsNamed) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  if (kernel_has_kprobes()) {
    GTEST_SKIP() << "this kernel has kprobes (KprobeProgramReportsEachConnect attaches them here, and the VM "
                    "test, scripts/vm-test, on a stock kernel)";
  }
  ToolProcess tool({"--program-file", fixture("kprobe_probe.bpf.c")});
  EXPECT_EQ(tool.wait_exit(120s), 1);
  EXPECT_NE(tool.stderr_text().find("cannot attach kprobe tcp_v4_connect: this kernel has no kprobe support"),
            std::string::npos)
      << tool.stderr_text();
  EXPECT_EQ(tool.stdout_text(), "");
}

TEST(ProgramFile, MissingTracepointIsNamed) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  // A tracepoint that does not exist anywhere.
  const fs::path dir = fs::temp_directory_path() / ("tcptrace-tp-" + std::to_string(getpid()));
  fs::create_directories(dir);
  // (It reads no field of the record: BCC could not describe one.)
  const std::string text =
      "struct value { u32 pid; };\n"
      "BPF_PERF_OUTPUT(values);\n"
      "TRACEPOINT_PROBE(syscalls, sys_enter_no_such_call) {\n"
      "    struct value v = {};\n"
      "    v.pid = bpf_get_current_pid_tgid() >> 32;\n"
      "    values.perf_submit(args, &v, sizeof(v));\n"
      "    return 0;\n"
      "}\n";
  { std::ofstream(dir / "bad_tp.bpf.c") << text; }
  ToolProcess tool({"--program-file", (dir / "bad_tp.bpf.c").string()});
  EXPECT_EQ(tool.wait_exit(120s), 1);
  EXPECT_NE(tool.stderr_text().find("cannot attach tracepoint syscalls:sys_enter_no_such_call: this kernel has "
                                    "no such tracepoint"),
            std::string::npos)
      << tool.stderr_text();
  fs::remove_all(dir);
}

TEST(ProgramFile, WatchSwapsToAnEditedCopy) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const fs::path dir = fs::temp_directory_path() / ("tcptrace-watch-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path program = dir / "probe.bpf.c";
  const std::string original = read_text(fixture("connect_probe.bpf.c"));
  { std::ofstream(program) << original; }

  auto tool = start_file(program.string(), {"--watch"});
  ASSERT_TRUE(tool);
  Socket l1, c1;
  connect_once(l1, c1);
  ASSERT_TRUE(tool->wait_for_lines(1, 10s)) << tool->stderr_text();

  // A broken edit: reported, the old version keeps running.
  { std::ofstream(program) << original << "\nthis is not C;\n"; }
  ASSERT_TRUE(tool->wait_for_stderr_line(line_ending_with("; the previous version keeps running"), 60s))
      << tool->stderr_text();
  EXPECT_NE(tool->stderr_text().find(program.string() + ":"), std::string::npos) << tool->stderr_text();

  // A good edit with a new field.
  std::string edited = original;
  const std::string member = "    u8 daddr[16];\n";
  edited.replace(edited.find(member), member.size(), member + "    u32 generation;\n");
  const std::string assignment = "    call.fd = args->fd;\n";
  edited.replace(edited.find(assignment), assignment.size(), assignment + "    call.generation = 2;\n");
  { std::ofstream(program) << edited; }
  ASSERT_TRUE(tool->wait_for_stderr_line(line_starting_with("tcptrace-bcc: reloaded: "), 60s))
      << tool->stderr_text();
  Socket l2, c2;
  connect_once(l2, c2);
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();

  const std::vector<json> calls = mine(tool->events());  // every line must parse
  ASSERT_GE(calls.size(), 2u) << tool->stdout_text();
  EXPECT_FALSE(calls.front().contains("generation")) << calls.front();
  EXPECT_EQ(calls.back().at("generation"), 2) << calls.back();
  EXPECT_EQ(calls.back().at("dport"), l2.local_port());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tcptrace::testing
