// Every bad input of the "hard to break" list: one clear line on stderr
// naming the option or file, the right exit status (2 usage, 1 runtime),
// nothing on stdout, and no BPF program left loaded behind.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tool_process.h"
#include "trusted_file.h"

namespace tcptrace::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return std::string(TCPTRACE_SOURCE_DIR) + "/tests/fixtures/" + name; }

// Files the cases point at. The cases are listed before any test runs (and
// ctest runs each test in a process of its own), so the directory has a
// fixed name, is filled by the test that needs it and removed at exit.
fs::path scratch() { return fs::temp_directory_path() / "tcptrace-bad-input"; }

void make_scratch() {
  const fs::path d = scratch();
  fs::remove_all(d);
  fs::create_directories(d);
  std::ofstream(d / "empty.bpf.c").close();
  std::ofstream(d / "unreadable.bpf.c") << "int x;\n";
  // Seeded maps the program does not declare, or declares with other types
  // than tcptrace_owner.h gives.
  const std::string probe =
      "BPF_PERF_OUTPUT(events);\nstruct e { u32 pid; };\n"
      "TRACEPOINT_PROBE(sock, inet_sock_set_state) {\n  struct e v = {};\n"
      "  events.perf_submit(args, &v, sizeof(v));\n  return 0;\n}\n";
  std::ofstream(d / "seed_no_map.bpf.c") << "// tcptrace:seed tcp-listeners=nothere\n" << probe;
  std::ofstream(d / "seed_wrong_map.bpf.c") << "// tcptrace:seed tcp-connections=owners\n"
                                            << "BPF_HASH(owners, u64, u32, 16);\n" << probe;
  std::ofstream(d / "seed_bad_kind.bpf.c") << "// tcptrace:seed udp-sockets=owners\n" << probe;
  // Tables the annotation lists that the program does not have, or that
  // hold no integers.
  std::ofstream(d / "tables_no_map.bpf.c") << "// tcptrace:tables nothere\n" << probe;
  std::ofstream(d / "tables_struct_values.bpf.c") << "// tcptrace:tables pairs\n"
                                                  << "struct pair { u64 a; u64 b; };\n"
                                                  << "BPF_HASH(pairs, u32, struct pair);\n" << probe;
  // Compiles and loads (the kernel checks a raw tracepoint's name only when
  // the program is attached to it), then attaching fails: no such
  // tracepoint.
  std::ofstream(d / "attach_refused.bpf.c")
      << probe << "RAW_TRACEPOINT_PROBE(tcptrace_no_such_tracepoint) {\n  struct e v = {};\n"
      << "  events.perf_submit(ctx, &v, sizeof(v));\n  return 0;\n}\n";
  fs::permissions(d / "unreadable.bpf.c", fs::perms::none);
  // Files a root process must not read or write (trusted_file.h).
  ::mkfifo((d / "fifo.bpf.c").c_str(), 0644);
  fs::create_symlink(d / "empty.bpf.c", d / "link.bpf.c");
  std::ofstream(d / "large.bpf.c") << std::string(kMaxProgramFileBytes, '/') << "\n";
  std::ofstream(d / "group_writable.bpf.c").close();
  fs::permissions(d / "group_writable.bpf.c", fs::perms::owner_read | fs::perms::owner_write |
                                                  fs::perms::group_read | fs::perms::group_write |
                                                  fs::perms::others_read);
  std::ofstream(d / "other_owner.bpf.c").close();
  if (::chown((d / "other_owner.bpf.c").c_str(), 12345, 12345) != 0) ADD_FAILURE() << "chown";
  fs::create_directories(d / "open_dir");
  std::ofstream(d / "open_dir" / "prog.bpf.c").close();
  fs::permissions(d / "open_dir", fs::perms::all);
  std::ofstream(d / "raw_target").close();
  fs::create_symlink(d / "raw_target", d / "raw_link");
  fs::create_hard_link(d / "raw_target", d / "raw_hard_link");
  ::mkfifo((d / "raw_fifo").c_str(), 0600);
  // A copy of the tool that an unprivileged user may execute wherever the
  // build tree lives.
  fs::copy_file(tool_binary(), d / "tcptrace-bcc");
  fs::permissions(d, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                         fs::perms::others_read | fs::perms::others_exec);
}

class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(scratch(), ec);
  }
};
const auto* const kScratchCleanup = ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

std::string running_release() {
  utsname un{};
  uname(&un);
  return un.release;
}

// Runs the tool in a private mount namespace after `setup` (shell commands).
std::vector<std::string> in_mount_namespace(const std::string& setup) {
  return {"unshare", "--mount", "--propagation", "private", "sh", "-c", setup + " && exec \"$0\" \"$@\""};
}

const std::vector<std::string> kAsNobody = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
// Root without the capabilities that let it read any file.
const std::vector<std::string> kWithoutFileOverride = {
    "setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"};
// Root, but without the capabilities tracing needs: dropped from the bounding
// set, root's capabilities after exec are what remains.
const std::vector<std::string> kWithoutTracingCaps = {"setpriv", "--bounding-set=-bpf,-perfmon,-sys_admin",
                                                      "--inh-caps=-all"};

struct BadInput {
  std::string name;
  std::vector<std::string> args;
  int exit_status;
  std::string message;  // must appear on stderr
  std::vector<std::string> wrapper = {};
  bool one_line = true;  // compiler diagnostics take more
};

std::ostream& operator<<(std::ostream& os, const BadInput& c) { return os << c.name; }

class BadInputTable : public ::testing::TestWithParam<BadInput> {};

TEST_P(BadInputTable, OneLineRightStatusNothingLeftLoaded) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  make_scratch();
  const BadInput& c = GetParam();
  const BpfObjectIds before = loaded_bpf_objects();
  ToolProcess tool(c.wrapper, c.args,
                   c.wrapper == kAsNobody ? (scratch() / "tcptrace-bcc").string() : tool_binary());
  const int status = tool.wait_exit(120s);
  const std::string err = tool.stderr_text();
  EXPECT_EQ(status, c.exit_status) << err;
  EXPECT_NE(err.find(c.message), std::string::npos) << "expected '" << c.message << "' in:\n" << err;
  EXPECT_EQ(tool.stdout_text(), "");
  const std::string last_line = err.substr(err.rfind('\n', err.size() - 2) == std::string::npos
                                               ? 0
                                               : err.rfind('\n', err.size() - 2) + 1);
  EXPECT_EQ(last_line.rfind("tcptrace-bcc: ", 0), 0u) << "the last line is the tool's own: " << err;
  if (c.one_line) {
    // The header-choice notice may precede the error on this machine.
    size_t lines = 0;
    for (size_t at = 0; (at = err.find('\n', at)) != std::string::npos; ++at) ++lines;
    const bool notice = err.find("using kernel headers") != std::string::npos;
    EXPECT_EQ(lines, notice ? 2u : 1u) << err;
  }
  EXPECT_EQ(err.find("terminate called"), std::string::npos) << err;
  // Everything the run loaded (programs, maps, links) is released with its
  // last fd, whether it failed before loading or after.
  EXPECT_EQ(wait_until_released(before), "") << "left in the kernel after the tool exited";
}

// The built-in programs as the tool lists them in its error: the
// programs/ files' stems, sorted.
std::string known_programs() {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(std::string(TCPTRACE_SOURCE_DIR) + "/programs")) {
    const std::string file = entry.path().filename().string();
    const std::string suffix = ".bpf.c";
    if (file.size() > suffix.size() && file.substr(file.size() - suffix.size()) == suffix) {
      names.push_back(file.substr(0, file.size() - suffix.size()));
    }
  }
  std::sort(names.begin(), names.end());
  std::string text;
  for (const std::string& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

// 1025 ports: one entry more than a list may hold.
std::string long_port_list() {
  std::string list;
  for (int port = 1; port <= 1025; ++port) list += (list.empty() ? "" : ",") + std::to_string(port);
  return list;
}

std::vector<BadInput> cases() {
  const std::string dir = scratch().string();
  return {
      {"sport_out_of_range", {"--program", "states", "--sport", "70000"}, 2, "--sport: port '70000' is out of range"},
      {"sport_not_a_number", {"--program", "states", "--sport", "abc"}, 2, "--sport: 'abc' is not a port number"},
      {"sport_empty", {"--program", "states", "--sport", ""}, 2, "--sport: empty port list"},
      {"sport_backwards_range", {"--program", "states", "--sport", "10-5"}, 2, "--sport: range '10-5' ends before"},
      {"dport_zero", {"--program", "states", "--dport", "0"}, 2, "--dport: port 0 is not a valid port"},
      {"pid_negative", {"--program", "connlat", "--pid", "-5"}, 2, "--pid: '-5' is not a process id"},
      {"pid_huge", {"--program", "connlat", "--pid", "99999999999"}, 2, "--pid: '99999999999' is not a process id"},
      {"min_us_negative", {"--program", "connlat", "--min-us", "-1"}, 2, "--min-us: '-1' is negative"},
      {"both_families", {"--program", "states", "-4", "-6"}, 2, "-4 and -6 exclude each other"},
      {"count_zero", {"--program", "states", "--count", "0"}, 2, "--count: must be at least 1"},
      {"duration_negative", {"--program", "states", "--duration", "-3"}, 2, "--duration: '-3' must be a positive"},
      {"unknown_program", {"--program", "nosuch"}, 2, "unknown program 'nosuch' (known: " + known_programs() + ")"},
      {"program_file_missing", {"--program-file", dir + "/missing.bpf.c"}, 2, "does not exist"},
      {"program_file_directory", {"--program-file", dir}, 2, "is a directory"},
      {"program_file_unreadable", {"--program-file", dir + "/unreadable.bpf.c"}, 1,
       "cannot read '" + dir + "/unreadable.bpf.c': Permission denied", kWithoutFileOverride},
      {"program_file_empty", {"--program-file", dir + "/empty.bpf.c"}, 2, "is empty"},
      {"program_file_fifo", {"--program-file", dir + "/fifo.bpf.c"}, 2,
       "--program-file: '" + dir + "/fifo.bpf.c' is not a regular file (a FIFO, socket or device)"},
      {"program_file_device", {"--program-file", "/dev/zero"}, 2,
       "--program-file: '/dev/zero' is not a regular file (a FIFO, socket or device)"},
      {"program_file_symlink", {"--program-file", dir + "/link.bpf.c"}, 2,
       "--program-file: '" + dir + "/link.bpf.c' is a symbolic link; give the file it points to"},
      {"program_file_too_large", {"--program-file", dir + "/large.bpf.c"}, 2,
       "--program-file: '" + dir + "/large.bpf.c' is larger than 1048576 bytes"},
      {"program_file_group_writable", {"--program-file", dir + "/group_writable.bpf.c"}, 1,
       "--program-file: '" + dir + "/group_writable.bpf.c' is writable by group or others (mode 0664); refusing it "
       "as root (chmod go-w)"},
      {"program_file_other_owner", {"--program-file", dir + "/other_owner.bpf.c"}, 1,
       "--program-file: '" + dir + "/other_owner.bpf.c' is owned by uid 12345, neither root nor the user running "
       "the tool; refusing it as root"},
      {"program_file_in_writable_directory", {"--program-file", dir + "/open_dir/prog.bpf.c"}, 1,
       "--program-file: '" + dir + "/open_dir' is writable by group or others (mode 0777)"},
      {"programs_dir_writable", {"--programs-dir", dir + "/open_dir", "--program", "prog"}, 1,
       "--programs-dir: '" + dir + "/open_dir' is writable by group or others (mode 0777)"},
      {"record_raw_symlink", {"--program", "states", "--duration", "0.1", "--record-raw", dir + "/raw_link"}, 2,
       "--record-raw: '" + dir + "/raw_link' is a symbolic link; give the file it points to"},
      {"record_raw_fifo", {"--program", "states", "--duration", "0.1", "--record-raw", dir + "/raw_fifo"}, 2,
       "--record-raw: '" + dir + "/raw_fifo' is not a regular file (a FIFO, socket or device)"},
      {"record_raw_hard_link", {"--program", "states", "--duration", "0.1", "--record-raw", dir + "/raw_hard_link"},
       1, "--record-raw: '" + dir + "/raw_hard_link' has other hard links; refusing to overwrite it"},
      // Opened before anything is compiled: its error comes, not the
      // program's.
      {"record_raw_before_compiling", {"--program-file", fixture("syntax_error.bpf.c"), "--record-raw",
                                        "/nonexistent-tcptrace-dir/raw"}, 1,
       "--record-raw: cannot resolve '/nonexistent-tcptrace-dir': No such file or directory"},
      {"does_not_compile", {"--program-file", fixture("syntax_error.bpf.c")}, 1,
       fixture("syntax_error.bpf.c") + ":12:", {}, false},
      {"verifier_rejects", {"--program-file", fixture("verifier_reject.bpf.c")}, 1,
       fixture("verifier_reject.bpf.c") + ":13: the kernel refused to load tracepoint syscalls:sys_enter_connect", {},
       false},
      {"attach_refused", {"--program-file", dir + "/attach_refused.bpf.c"}, 1,
       "cannot attach raw_tracepoint tcptrace_no_such_tracepoint: No such file or directory"},
      {"seed_map_missing", {"--program-file", dir + "/seed_no_map.bpf.c"}, 1,
       "seed_no_map.bpf.c: tcptrace:seed tcp-listeners=nothere: the program declares no such map"},
      {"seed_map_wrong_types", {"--program-file", dir + "/seed_wrong_map.bpf.c"}, 1,
       "tcptrace:seed tcp-connections=owners: map 'owners' must be a hash or lru_hash map with 44-byte keys and "
       "20-byte values; it is a map of type 1 with 8-byte keys and 4-byte values (struct tcptrace_connection_key "
       "-> struct tcptrace_owner, tcptrace_owner.h)"},
      {"seed_kind_unknown", {"--program-file", dir + "/seed_bad_kind.bpf.c"}, 1,
       "line 1: tcptrace:seed 'udp-sockets=owners': unknown kind (known: tcp-listeners, tcp-connections)"},
      {"tables_map_missing", {"--program-file", dir + "/tables_no_map.bpf.c"}, 1,
       "tables_no_map.bpf.c: tcptrace:tables nothere: the program declares no such map"},
      {"tables_struct_values", {"--program-file", dir + "/tables_struct_values.bpf.c"}, 1,
       "tables_struct_values.bpf.c: tcptrace:tables pairs: its values are not integers (BCC describes them as "
       "[\"pair\", [[\"a\",\"unsigned long long\"], [\"b\",\"unsigned long long\"] ], \"struct_packed\"])"},
      {"buffer_pages_over_cap", {"--program", "states", "--buffer-pages", "2048"}, 2,
       "--buffer-pages: '2048' must be a power of two from 1 to 1024"},
      {"sport_list_too_long", {"--program", "states", "--sport", long_port_list()}, 2,
       "--sport: more than 1024 entries in the port list (give ranges: 8000-8100)"},
      {"unknown_option", {"--program", "states", "--frobnicate"}, 2, "unknown option '--frobnicate'"},
      {"program_twice", {"--program", "states", "--program", "connlat"}, 2, "--program given more than once"},
      {"count_twice", {"--program", "states", "--count", "1", "--count", "2"}, 2, "--count given more than once"},
      {"macro_bad_name", {"--program", "states", "-D", "a-b=1"}, 2, "-D: 'a-b=1' is neither a port list"},
      {"macro_digit_name", {"--program", "states", "-D", "9x=1"}, 2, "-D: '9x=1' is neither a port list"},
      {"macro_reserved", {"--program", "states", "-D", "FILTER_PID=1"}, 2, "macro FILTER_PID is reserved"},
      {"filter_not_honoured", {"--program", "states", "--min-us", "5"}, 2,
       "--min-us: program states does not support this filter"},
      {"attach_without_variants", {"--program", "states", "--attach", "kprobe"}, 2,
       "--attach: program states has no attach variants"},
      // retrans: the filters it honours (sport, dport, family, pid), its
      // one opt-in label (dport) and its mode macro.
      {"retrans_min_us", {"--program", "retrans", "--min-us", "5"}, 2,
       "--min-us: program retrans does not support this filter"},
      {"retrans_no_failures", {"--program", "retrans", "--no-failures"}, 2,
       "--no-failures: program retrans does not support this filter"},
      {"retrans_attach", {"--program", "retrans", "--attach", "tracepoint"}, 2,
       "--attach: program retrans has no attach variants"},
      {"retrans_metrics_label_sport", {"--program", "retrans", "--metrics", "127.0.0.1:0", "--metrics-label", "sport"},
       2, "--metrics-label sport: program retrans declares no opt-in label of that name"},
      {"retrans_sport_zero", {"--program", "retrans", "--sport", "0"}, 2, "--sport: port 0 is not a valid port"},
      {"retrans_both_families", {"--program", "retrans", "-4", "-6"}, 2, "-4 and -6 exclude each other"},
      {"retrans_pid_negative", {"--program", "retrans", "--pid", "-1"}, 2, "--pid: '-1' is not a process id"},
      {"retrans_count_flows_two", {"--program", "retrans", "-D", "COUNT_FLOWS=2"}, 1,
       "error: \"COUNT_FLOWS is 0 (a line per retransmission) or 1 (segments per flow)\"", {}, false},
      {"buffer_unknown", {"--program", "states", "--buffer", "shm"}, 2, "--buffer: 'shm' is not one of"},
      {"ringbuf_without_variant", {"--program-file", fixture("connect_probe.bpf.c"), "--buffer", "ringbuf"}, 2,
       "--buffer ringbuf: program connect_probe has no ring buffer variant"},
      {"attach_unknown", {"--program", "connlat", "--attach", "uprobe"}, 2, "--attach: 'uprobe' is not one of"},
      {"metrics_address_unparsable", {"--program", "connlat", "--metrics", "localhost:9464"}, 2,
       "--metrics: 'localhost:9464' does not start with an IP address"},
      {"metrics_label_unknown", {"--program", "connlat", "--metrics", "127.0.0.1:0", "--metrics-label", "pid"}, 2,
       "--metrics-label pid: program connlat declares no opt-in label of that name"},
      {"output_none_without_metrics", {"--program", "connlat", "--output", "none"}, 2,
       "--output none needs --metrics ADDR"},
      // TEST-NET-1 (RFC 5737) is no address of this machine: bind() fails.
      {"metrics_address_not_local", {"--program", "connlat", "--metrics", "192.0.2.1:9464"}, 1,
       "--metrics: cannot serve on 192.0.2.1:9464: "},
      {"not_root", {"--program", "states"}, 1, "tracing needs root, or CAP_BPF and CAP_PERFMON", kAsNobody},
      {"root_without_tracing_caps", {"--program", "states"}, 1,
       "tracing needs root, or CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), which this process lacks",
       kWithoutTracingCaps},
      {"no_kernel_headers", {"--program", "states"}, 1, "install linux-headers-" + running_release(),
       in_mount_namespace("mount -t tmpfs none /usr/src && { [ ! -d /lib/modules ] || mount -t tmpfs none "
                          "/lib/modules; }")},
      // rtt's options: the filters it does not honour, its macros' limits,
      // an opt-in label its key lacks without the macro that adds it.
      {"rtt_pid_not_honoured", {"--program", "rtt", "--pid", "1"}, 2,
       "--pid: program rtt does not support this filter (it has no 'tcptrace:filters pid' line)"},
      {"rtt_no_failures_not_honoured", {"--program", "rtt", "--no-failures"}, 2,
       "--no-failures: program rtt does not support this filter"},
      {"rtt_min_us_not_a_number", {"--program", "rtt", "--min-us", "1ms"}, 2, "--min-us: '1ms'"},
      {"rtt_attach_without_variants", {"--program", "rtt", "--attach", "tracepoint"}, 2,
       "--attach: program rtt has no attach variants"},
      {"rtt_both_address_keys", {"--program", "rtt", "-D", "RTT_BY_LADDR", "-D", "RTT_BY_RADDR"}, 1,
       "RTT_BY_LADDR and RTT_BY_RADDR exclude each other", {}, false},
      {"rtt_addrs_zero", {"--program", "rtt", "-D", "RTT_BY_LADDR", "-D", "RTT_ADDRS=0"}, 1,
       "RTT_ADDRS must be from 1 to 100", {}, false},
      {"rtt_addrs_over_limit", {"--program", "rtt", "-D", "RTT_BY_RADDR", "-D", "RTT_ADDRS=101"}, 1,
       "RTT_ADDRS must be from 1 to 100", {}, false},
      {"rtt_sample_ms_negative", {"--program", "rtt", "-D", "RTT_EVENTS=1", "-D", "RTT_SAMPLE_MS=-5"}, 1,
       "RTT_SAMPLE_MS must not be negative", {}, false},
      {"rtt_metrics_label_unknown", {"--program", "rtt", "--metrics", "127.0.0.1:0", "--metrics-label", "dport"}, 2,
       "--metrics-label dport: program rtt declares no opt-in label of that name"},
      {"rtt_metrics_label_without_its_key", {"--program", "rtt", "--metrics", "127.0.0.1:0", "--metrics-label",
                                             "saddr"}, 1,
       "metric tcptrace_tcp_srtt_seconds: --metrics-label saddr: the key of map 'srtt' has no member 'saddr' (it "
       "has family)"},
      {"rtt_aggregate_kernel_with_event_lines", {"--program", "rtt", "--metrics", "127.0.0.1:0", "--aggregate",
                                                 "kernel"}, 2,
       "--aggregate kernel: the events never reach the host, so there are no event lines; add --output none"},
      {"tracefs_cannot_be_mounted", {"--program", "states"}, 1,
       "tracefs is not mounted and mounting it failed (No such file or directory): run 'mount -t tracefs nodev "
       "/sys/kernel/tracing' as root",
       in_mount_namespace("mount -t tmpfs none /sys/kernel")},
  };
}

INSTANTIATE_TEST_SUITE_P(Cases, BadInputTable, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<BadInput>& info) { return info.param.name; });

// tracefs not mounted, but mountable: the tool mounts it and says so.
TEST(BadInput, UnmountedTracefsIsMounted) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  ToolProcess tool(in_mount_namespace("{ umount /sys/kernel/debug/tracing 2>/dev/null; true; } && "
                                      "{ umount /sys/kernel/tracing 2>/dev/null; true; } && "
                                      "! [ -e /sys/kernel/tracing/events ]"),
                   {"--program", "states", "--check"});
  EXPECT_EQ(tool.wait_exit(120s), 0) << tool.stderr_text();
  EXPECT_NE(tool.stderr_text().find("mounted tracefs at /sys/kernel/tracing (it was not mounted)"),
            std::string::npos)
      << tool.stderr_text();
}

}  // namespace
}  // namespace tcptrace::testing
