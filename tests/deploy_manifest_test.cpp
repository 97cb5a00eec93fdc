// deploy/daemonset.yaml, parsed (PyYAML turns it into JSON) and checked for
// what the tool needs on a node (host network, the host mounts BCC compiles
// and attaches through, arguments the tool accepts, scrape annotations that
// point at the port it serves) and that it gets no more than that: no
// privileged container, no host pid namespace, exactly the capabilities the
// manifest's header justifies, read-only host mounts.
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "options.h"

namespace tcptrace {
namespace {

using nlohmann::json;

// The capabilities each container adds to none (drop: [ALL]); the manifest's
// header says why each. A capability added without a reason there, or one
// of these dropped without changing the tool, fails here.
const std::set<std::string> kAddedCapabilities = {
    "BPF",           // bpf(): maps, BTF, programs
    "PERFMON",       // tracing program types, perf_event_open() to attach
    "SYS_RESOURCE",  // Linux 5.8-5.10: BCC raises RLIMIT_MEMLOCK
};

// The node's paths the tool reads, each mounted at the same path: kernel
// headers (/lib/modules, /usr/src) and tracefs. No other host path (debugfs
// included: BCC and the tool fall back to /sys/kernel/tracing without it).
const std::set<std::string> kHostPaths = {"/lib/modules", "/usr/src", "/sys/kernel/tracing",
                                          "/var/cache/tcptrace-bcc"};

// Host paths mounted writable: the compile cache, which outlives the pod so a
// restart loads without compiling. tracefs is only read (tracepoint formats
// and ids); BCC writes to it only to create a kprobe where the kernel has no
// kprobe PMU (before 4.17), which also has no CAP_BPF.
const std::set<std::string> kWritableHostPaths = {"/var/cache/tcptrace-bcc"};

bool running_in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// Every YAML document of the manifest as one JSON array, or null when
// python3 with PyYAML is not there.
json manifest_documents() {
  const std::string command = "python3 -c 'import sys, json, yaml; "
                              "json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)' " +
                              std::string(TCPTRACE_SOURCE_DIR) + "/deploy/daemonset.yaml 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return nullptr;
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) text.append(buffer, n);
  const int status = pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return nullptr;
  return json::parse(text, nullptr, false);
}

// The manifest's DaemonSets; empty (and the test skipped, or failed in CI)
// when the manifest cannot be parsed here.
std::vector<json> daemon_sets() {
  const json documents = manifest_documents();
  if (documents.is_null() || documents.is_discarded()) {
    if (running_in_ci()) ADD_FAILURE() << "CI=true: python3 with PyYAML could not parse deploy/daemonset.yaml";
    return {};
  }
  std::vector<json> found;
  for (const json& doc : documents) {
    if (doc.is_object() && doc.value("kind", "") == "DaemonSet") found.push_back(doc);
  }
  return found;
}

// What a container has at one of its mount paths.
struct Mount {
  std::string host_path;  // empty: not a hostPath volume
  bool empty_dir = false;
  bool read_only = false;
};

// Mount path -> what is mounted there, joining volumeMounts to volumes.
std::map<std::string, Mount> mounts_of(const json& pod_spec, const json& container) {
  std::map<std::string, json> volumes;  // name -> volume
  for (const json& volume : pod_spec.value("volumes", json::array())) volumes[volume.at("name")] = volume;
  std::map<std::string, Mount> mounts;
  for (const json& mount : container.value("volumeMounts", json::array())) {
    const json& volume = volumes.at(mount.at("name"));
    Mount m;
    if (volume.contains("hostPath")) m.host_path = volume.at("hostPath").at("path");
    m.empty_dir = volume.contains("emptyDir");
    m.read_only = mount.value("readOnly", false);
    mounts[mount.at("mountPath")] = m;
  }
  return mounts;
}

TEST(DeployManifest, DaemonSetsHaveWhatTheToolNeeds) {
  const std::vector<json> sets = daemon_sets();
  if (sets.empty()) GTEST_SKIP() << "python3-yaml is missing, or the manifest is not valid YAML";
  std::set<std::string> programs;
  std::set<std::string> ports;
  for (const json& doc : sets) {
    SCOPED_TRACE(doc.at("metadata").at("name").get<std::string>());
    EXPECT_EQ(doc.at("apiVersion"), "apps/v1");
    const json& spec = doc.at("spec");
    const json& pod = spec.at("template");
    // The selector must select the template's pods, or apply is refused.
    for (const auto& [key, value] : spec.at("selector").at("matchLabels").items()) {
      EXPECT_EQ(pod.at("metadata").at("labels").at(key), value) << key;
    }
    const json& pod_spec = pod.at("spec");
    EXPECT_EQ(pod_spec.at("hostNetwork"), true) << "metrics on the node's address";
    EXPECT_EQ(pod_spec.at("dnsPolicy"), "ClusterFirstWithHostNet");

    ASSERT_EQ(pod_spec.at("containers").size(), 1u);
    const json& container = pod_spec.at("containers")[0];
    // The image's ENTRYPOINT, /usr/sbin/tcptrace-bcc (tests/dockerfile_test.cpp),
    // gets the args below; a command would replace it.
    EXPECT_FALSE(container.contains("command")) << "args only: the image's entrypoint is the tool";
    const std::map<std::string, Mount> mounts = mounts_of(pod_spec, container);
    for (const std::string& path : kHostPaths) {
      EXPECT_EQ(mounts.count(path) ? mounts.at(path).host_path : "", path)
          << "the node's " << path << " at the same path";
    }
    // The root filesystem is read-only: temporary files (BCC's extraction of
    // kheaders.tar.xz) go to a writable emptyDir.
    EXPECT_TRUE(mounts.count("/tmp") && mounts.at("/tmp").empty_dir && !mounts.at("/tmp").read_only)
        << "/tmp must be a writable emptyDir";

    // The arguments are ones the tool accepts, as it parses them.
    const json& args = container.at("args");
    std::vector<std::string> argv_text = {"tcptrace-bcc"};
    for (const json& a : args) argv_text.push_back(a.get<std::string>());
    std::vector<const char*> argv;
    for (const std::string& a : argv_text) argv.push_back(a.c_str());
    auto options = parse_options(static_cast<int>(argv.size()), argv.data());
    ASSERT_TRUE(options.ok()) << options.error().message;
    ASSERT_TRUE(options->metrics.has_value());
    EXPECT_EQ(options->output, Options::Output::none);
    ASSERT_TRUE(options->program.has_value());
    programs.insert(*options->program);
    const std::string port = std::to_string(options->metrics->port);
    EXPECT_TRUE(ports.insert(port).second) << "two DaemonSets on one host port: " << port;

    // Prometheus scrapes the port the tool serves.
    const json& annotations = pod.at("metadata").at("annotations");
    EXPECT_EQ(annotations.at("prometheus.io/scrape"), "true") << "a string: annotations are strings";
    EXPECT_EQ(annotations.at("prometheus.io/port"), port);
    EXPECT_EQ(annotations.at("prometheus.io/path"), "/metrics");
    EXPECT_EQ(container.at("ports")[0].at("containerPort"), options->metrics->port);
    EXPECT_EQ(container.at("livenessProbe").at("httpGet").at("port"), options->metrics->port);
    EXPECT_EQ(container.at("livenessProbe").at("httpGet").at("path"), "/metrics");
  }
  EXPECT_EQ(programs, (std::set<std::string>{"connlat", "states"}));
}

// Each default below is Kubernetes's when the field is absent, so a field
// left out counts as what it means.
TEST(DeployManifest, DaemonSetsGetNoMoreThanTheToolNeeds) {
  const std::vector<json> sets = daemon_sets();
  if (sets.empty()) GTEST_SKIP() << "python3-yaml is missing, or the manifest is not valid YAML";
  for (const json& doc : sets) {
    SCOPED_TRACE(doc.at("metadata").at("name").get<std::string>());
    const json& pod_spec = doc.at("spec").at("template").at("spec");
    // The metrics name no process, and the programs report the node's pids
    // from any pid namespace; the host's would only expose every process.
    EXPECT_EQ(pod_spec.value("hostPID", false), false) << "no host pid namespace";
    EXPECT_EQ(pod_spec.value("automountServiceAccountToken", true), false)
        << "the tool never calls the API server: no token in the pod";

    ASSERT_EQ(pod_spec.at("containers").size(), 1u);
    const json& container = pod_spec.at("containers")[0];
    const json context = container.value("securityContext", json::object());
    EXPECT_EQ(context.value("privileged", false), false) << "not privileged";
    EXPECT_EQ(context.value("allowPrivilegeEscalation", true), false) << "no_new_privs from the start";
    EXPECT_EQ(context.value("readOnlyRootFilesystem", false), true);
    EXPECT_EQ(context.value("runAsUser", -1), 0) << "added capabilities are effective only for root";

    // The container's seccomp profile, else the pod's.
    const json pod_context = pod_spec.value("securityContext", json::object());
    const json seccomp = context.value("seccompProfile", pod_context.value("seccompProfile", json::object()));
    EXPECT_EQ(seccomp.value("type", "Unconfined"), "RuntimeDefault");

    const json capabilities = context.value("capabilities", json::object());
    EXPECT_EQ(capabilities.value("drop", json::array()), json::array({"ALL"}));
    std::vector<std::string> added = capabilities.value("add", std::vector<std::string>{});
    std::sort(added.begin(), added.end());
    EXPECT_EQ(std::adjacent_find(added.begin(), added.end()), added.end()) << "a capability added twice";
    EXPECT_EQ(std::set<std::string>(added.begin(), added.end()), kAddedCapabilities);

    std::set<std::string> host_paths;
    for (const auto& [mount_path, mount] : mounts_of(pod_spec, container)) {
      if (mount.host_path.empty()) continue;
      host_paths.insert(mount.host_path);
      EXPECT_EQ(mount.read_only, kWritableHostPaths.count(mount.host_path) == 0)
          << "host path " << mount.host_path << " mounted at " << mount_path
          << (mount.read_only ? " read-only, but the tool writes there" : " writable");
    }
    EXPECT_EQ(host_paths, kHostPaths) << "the node's paths in the pod: exactly those the tool reads";
  }
}

}  // namespace
}  // namespace tcptrace
