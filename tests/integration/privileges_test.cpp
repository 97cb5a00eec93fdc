// After "ready" the tool holds no capability (CapEff, CapPrm and CapBnd 0,
// NoNewPrivs 1 in every thread), or CAP_BPF alone where the kernel refuses
// bpf() on held fds without it; the buffers, the scrapes of in-kernel
// counts and the teardown work all the same. --watch, which loads again,
// keeps them.
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <cctype>
#include <cstdio>

#include <nlohmann/json.hpp>
#include <thread>

#include "http_get.h"
#include "loopback.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The kernel's answer, asked independently of the tool: may a process with
// no capability look up a map whose fd it holds? (Linux 6.5+: yes; before,
// not with kernel.unprivileged_bpf_disabled set.)
bool held_maps_readable_without_capabilities() {
  union bpf_attr create {};
  create.map_type = BPF_MAP_TYPE_ARRAY;
  create.key_size = 4;
  create.value_size = 4;
  create.max_entries = 1;
  const int map = static_cast<int>(syscall(SYS_bpf, BPF_MAP_CREATE, &create, sizeof create));
  if (map < 0) return false;
  const pid_t child = fork();
  if (child == 0) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct none[2] = {};
    if (syscall(SYS_capset, &header, none) != 0) _exit(2);
    uint32_t key = 0, value = 0;
    union bpf_attr lookup {};
    lookup.map_fd = static_cast<uint32_t>(map);
    lookup.key = reinterpret_cast<uint64_t>(&key);
    lookup.value = reinterpret_cast<uint64_t>(&value);
    _exit(syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &lookup, sizeof lookup) == 0 ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  close(map);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// CAP_BPF where the kernel has it, as the tool keeps it.
uint64_t bpf_capability_mask() {
  return prctl(PR_CAPBSET_READ, 39, 0, 0, 0) >= 0 ? uint64_t{1} << 39 : uint64_t{1} << CAP_SYS_ADMIN;
}

// Fields of /proc/PID/task/TID/status for every thread of `pid`.
std::vector<std::map<std::string, std::string>> thread_statuses(pid_t pid) {
  std::vector<std::map<std::string, std::string>> all;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::map<std::string, std::string> fields;
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);) {
      const size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      fields[line.substr(0, colon)] = value;
    }
    all.push_back(fields);
  }
  return all;
}

uint64_t hex(const std::string& text) { return std::stoull(text, nullptr, 16); }

void expect_dropped(pid_t pid, uint64_t kept) {
  const auto threads = thread_statuses(pid);
  ASSERT_FALSE(threads.empty());
  for (const auto& status : threads) {
    const std::string who = status.at("Name") + " (" + status.at("Pid") + ")";
    EXPECT_EQ(hex(status.at("CapEff")), kept) << who;
    EXPECT_EQ(hex(status.at("CapPrm")), kept) << who;
    EXPECT_EQ(hex(status.at("CapInh")), 0u) << who;
    EXPECT_EQ(hex(status.at("CapBnd")), 0u) << who;
    EXPECT_EQ(hex(status.at("CapAmb")), 0u) << who;
    EXPECT_EQ(status.at("NoNewPrivs"), "1") << who;
  }
}

TEST(Privileges, NoneLeftAfterReadyAndEventsStillFlow) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const uint64_t kept = held_maps_readable_without_capabilities() ? 0 : bpf_capability_mask();
  auto tool = start_ready({"--program", "states", "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(tool);
  // For the record of a run (scripts/vm-test's log): what this kernel made the tool keep.
  std::cout << "[   INFO   ] after ready the tool keeps " << (kept == 0 ? "no capability" : "CAP_BPF alone")
            << " (kernel.unprivileged_bpf_disabled=" << [] {
                 std::ifstream file("/proc/sys/kernel/unprivileged_bpf_disabled");
                 std::string value;
                 std::getline(file, value);
                 return value;
               }() << ")" << std::endl;
  if (kept != 0) {
    EXPECT_NE(tool->stderr_text().find("kept CAP_BPF alone after attaching: "), std::string::npos)
        << tool->stderr_text();
  }
  expect_dropped(tool->pid(), kept);
  // Events still arrive through the buffers the tool holds.
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  { Socket client = connect_loopback(AF_INET, listener.local_port()); }
  ASSERT_TRUE(tool->wait_for_lines(2, scaled(10s))) << tool->stderr_text();
  const uint16_t port = served_metrics_port(tool->stderr_text());
  const auto series = parse_exposition(http_get(port, "/metrics").body);
  EXPECT_GE(series.at("tcptrace_events_total"), 2);
  expect_dropped(tool->pid(), kept);  // the server's threads too, after serving
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
  EXPECT_EQ(tool->stderr_text().find("cannot"), std::string::npos) << tool->stderr_text();
}

// Counting in the kernel: every scrape reads the arrays with bpf() on fds
// the tool holds, after it has dropped its capabilities.
TEST(Privileges, InKernelCountsAreScrapedAfterTheDrop) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const uint64_t kept = held_maps_readable_without_capabilities() ? 0 : bpf_capability_mask();
  auto tool = start_ready({"--program", "connlat", "--metrics", "127.0.0.1:0", "--output", "none"});
  ASSERT_TRUE(tool);
  EXPECT_NE(tool->stderr_text().find("(counting in the kernel)"), std::string::npos) << tool->stderr_text();
  expect_dropped(tool->pid(), kept);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  for (int i = 0; i < 3; ++i) Socket client = connect_loopback(AF_INET, listener.local_port());
  std::map<std::string, double> series;
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  do {
    series = parse_exposition(http_get(port, "/metrics").body);
    if (series["tcptrace_tcp_connects_total{outcome=\"established\"}"] >= 3) break;
    std::this_thread::sleep_for(50ms);
  } while (std::chrono::steady_clock::now() < deadline);
  // The scrapes' own connects count too: at least the test's three.
  EXPECT_GE(series["tcptrace_tcp_connects_total{outcome=\"established\"}"], 3);
  expect_dropped(tool->pid(), kept);
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
}

// Each container of deploy/daemonset.yaml: its capabilities (the bounding
// set, as a runtime gives a root container only those) and its
// allowPrivilegeEscalation: false (no_new_privs), read from the manifest.
struct DaemonSetContainer {
  std::string name;
  std::vector<std::string> args;
  std::vector<std::string> capabilities;  // as the manifest spells them: BPF, PERFMON
};

std::vector<DaemonSetContainer> daemonset_containers() {
  const std::string command =
      "python3 -c 'import sys, json, yaml\n"
      "for d in yaml.safe_load_all(open(sys.argv[1])):\n"
      "  if d and d[\"kind\"] == \"DaemonSet\":\n"
      "    c = d[\"spec\"][\"template\"][\"spec\"][\"containers\"][0]\n"
      "    print(json.dumps([d[\"metadata\"][\"name\"], c[\"args\"], c[\"securityContext\"][\"capabilities\"][\"add\"]]))' " +
      std::string(TCPTRACE_SOURCE_DIR) + "/deploy/daemonset.yaml";
  std::vector<DaemonSetContainer> containers;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return containers;
  char line[4096];
  while (fgets(line, sizeof line, pipe) != nullptr) {
    const auto parsed = nlohmann::json::parse(line);
    containers.push_back({parsed[0], parsed[1], parsed[2]});
  }
  pclose(pipe);
  return containers;
}

// kernel.perf_event_paranoid, set for a scope and put back after it.
class PerfEventParanoid {
 public:
  static int read() {
    std::ifstream file("/proc/sys/kernel/perf_event_paranoid");
    int level = 2;
    file >> level;
    return level;
  }
  explicit PerfEventParanoid(int level) : saved_(read()) { write(level); }
  ~PerfEventParanoid() { write(saved_); }
  PerfEventParanoid(const PerfEventParanoid&) = delete;
  PerfEventParanoid& operator=(const PerfEventParanoid&) = delete;

 private:
  static void write(int level) { std::ofstream("/proc/sys/kernel/perf_event_paranoid") << level << "\n"; }
  int saved_;
};

// setpriv giving a root process `container`'s capabilities as its bounding
// set, and no_new_privs: its execve() of the tool permits no more, as a
// container runtime that adds just those to none with
// allowPrivilegeEscalation: false.
std::vector<std::string> as_in_container(const DaemonSetContainer& container) {
  std::string bounding = "-all";
  for (std::string cap : container.capabilities) {
    for (char& c : cap) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bounding += ",+" + cap;
  }
  return {"setpriv", "--inh-caps", "-all", "--bounding-set", bounding, "--no-new-privs", "--"};
}

// The container's arguments, serving on a free local port instead of the node's.
std::vector<std::string> local_args(const DaemonSetContainer& container) {
  std::vector<std::string> args = container.args;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--metrics") args[i + 1] = "127.0.0.1:0";
  }
  return args;
}

// Starts `container`'s arguments with only its capabilities and checks what
// the manifest promises: ready, dropped, counting, serving.
void expect_container_runs(const DaemonSetContainer& container) {
  uint64_t granted = 0;
  const std::map<std::string, int> numbers = {{"BPF", 39}, {"PERFMON", 38}, {"SYS_RESOURCE", CAP_SYS_RESOURCE}};
  for (const std::string& cap : container.capabilities) {
    ASSERT_TRUE(numbers.count(cap)) << "this test does not know " << cap;
    granted |= uint64_t{1} << numbers.at(cap);
  }
  ToolProcess tool(as_in_container(container), local_args(container));
  ASSERT_TRUE(tool.wait_until_ready(scaled(120s))) << tool.stderr_text();
  const auto threads = thread_statuses(tool.pid());
  ASSERT_FALSE(threads.empty());
  // What this test's own bounding set lacks (a container running the
  // tests may lack SYS_RESOURCE) it cannot grant either.
  granted &= hex(thread_statuses(getpid()).front().at("CapBnd"));
  EXPECT_EQ(hex(threads.front().at("CapBnd")), granted) << "setpriv did not give the manifest's set";
  const uint64_t kept = held_maps_readable_without_capabilities() ? 0 : bpf_capability_mask();
  for (const auto& status : threads) {
    EXPECT_EQ(hex(status.at("CapEff")), kept) << status.at("Name");
    EXPECT_EQ(hex(status.at("CapPrm")), kept) << status.at("Name");
    EXPECT_EQ(status.at("NoNewPrivs"), "1") << status.at("Name");
  }
  // In-kernel counts are read at each scrape, with what the tool kept. Every
  // program's own counters (tcptrace_tcp_*_total) see the three
  // connections: connlat's connects, states' transitions.
  const uint16_t port = served_metrics_port(tool.stderr_text());
  Socket listener = bind_loopback(AF_INET);
  start_listening(listener);
  for (int i = 0; i < 3; ++i) Socket client = connect_loopback(AF_INET, listener.local_port());
  double counted = 0;
  std::string body;
  const auto deadline = std::chrono::steady_clock::now() + scaled(10s);
  do {
    const HttpResponse scrape = http_get(port, "/metrics");
    ASSERT_EQ(scrape.status, 200) << tool.stderr_text();
    body = scrape.body;
    counted = 0;
    for (const auto& [series, value] : parse_exposition(body)) {
      if (series.rfind("tcptrace_tcp_", 0) == 0 && series.find("_total{") != std::string::npos) counted += value;
    }
    if (counted >= 3) break;
    std::this_thread::sleep_for(50ms);
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_GE(counted, 3) << body;
  EXPECT_EQ(tool.stop(SIGINT), 0) << tool.stderr_text();
  EXPECT_EQ(tool.stderr_text().find("cannot"), std::string::npos) << tool.stderr_text();
}

// The manifest's pods start with only the capabilities it adds and
// no_new_privs: the tool must load, attach, serve in-kernel counts and drop
// what it holds with exactly those, here and in the VM on Debian's 6.1.
// Debian's and Ubuntu's kernels add kernel.perf_event_paranoid levels above
// 2 (their default: 3) at which perf_event_open(), which attaches
// tracepoints, needs CAP_SYS_ADMIN: there a container either starts (its
// program attached without perf_event_open) or stops with the line naming
// the sysctl, and at level 2, as the manifest asks of such nodes, it runs.
TEST(Privileges, TheDaemonSetsCapabilitiesSuffice) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  const auto containers = daemonset_containers();
  ASSERT_EQ(containers.size(), 2u) << "python3-yaml could not read deploy/daemonset.yaml";
  const int paranoid = PerfEventParanoid::read();
  for (const DaemonSetContainer& container : containers) {
    SCOPED_TRACE(container.name);
    if (paranoid > 2) {
      ToolProcess tool(as_in_container(container), local_args(container));
      if (!tool.wait_until_ready(scaled(120s))) {
        EXPECT_EQ(tool.wait_exit(scaled(10s)), 1) << tool.stderr_text();
        EXPECT_NE(tool.stderr_text().find("; kernel.perf_event_paranoid is " + std::to_string(paranoid) +
                                          ", a level at which Debian and Ubuntu kernels allow perf_event_open() "
                                          "only with CAP_SYS_ADMIN"),
                  std::string::npos)
            << tool.stderr_text();
      } else {
        EXPECT_EQ(tool.stop(SIGINT), 0) << tool.stderr_text();
      }
      PerfEventParanoid level(2);
      expect_container_runs(container);
    } else {
      expect_container_runs(container);
    }
  }
}

// --watch compiles and loads every saved version: it keeps what that needs.
TEST(Privileges, WatchKeepsThem) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_ready({"--program-file", std::string(TCPTRACE_SOURCE_DIR) + "/programs/states.bpf.c", "--watch"});
  ASSERT_TRUE(tool);
  const auto threads = thread_statuses(tool->pid());
  EXPECT_NE(hex(threads.front().at("CapEff")), 0u);
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
}

}  // namespace
}  // namespace tcptrace::testing
