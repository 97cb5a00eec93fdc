// deploy/daemonset.yaml, parsed (PyYAML turns it into JSON) and checked for
// what the tool needs on a node: privileges, host pid and network, the host
// mounts BCC compiles and attaches through, arguments the tool accepts, and
// scrape annotations that point at the port it serves.
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <cstdlib>
#include <set>

#include <nlohmann/json.hpp>

#include "options.h"

namespace tcptrace {
namespace {

using nlohmann::json;

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

TEST(DeployManifest, DaemonSetsHaveWhatTheToolNeeds) {
  const json documents = manifest_documents();
  if (documents.is_null() || documents.is_discarded()) {
    if (running_in_ci()) FAIL() << "CI=true: python3 with PyYAML could not parse deploy/daemonset.yaml";
    GTEST_SKIP() << "python3-yaml is missing, or the manifest is not valid YAML";
  }
  std::set<std::string> programs;
  std::set<std::string> ports;
  for (const json& doc : documents) {
    if (doc.at("kind") != "DaemonSet") continue;
    SCOPED_TRACE(doc.at("metadata").at("name").get<std::string>());
    EXPECT_EQ(doc.at("apiVersion"), "apps/v1");
    const json& spec = doc.at("spec");
    const json& pod = spec.at("template");
    // The selector must select the template's pods, or apply is refused.
    for (const auto& [key, value] : spec.at("selector").at("matchLabels").items()) {
      EXPECT_EQ(pod.at("metadata").at("labels").at(key), value) << key;
    }
    const json& pod_spec = pod.at("spec");
    EXPECT_EQ(pod_spec.at("hostPID"), true) << "pids must be the node's";
    EXPECT_EQ(pod_spec.at("hostNetwork"), true) << "metrics on the node's address";
    EXPECT_EQ(pod_spec.at("dnsPolicy"), "ClusterFirstWithHostNet");

    std::map<std::string, std::string> host_paths;  // volume name -> host path
    for (const json& volume : pod_spec.at("volumes")) {
      host_paths[volume.at("name")] = volume.at("hostPath").at("path");
    }
    ASSERT_EQ(pod_spec.at("containers").size(), 1u);
    const json& container = pod_spec.at("containers")[0];
    EXPECT_EQ(container.at("securityContext").at("privileged"), true);
    std::map<std::string, std::string> mounted;  // mount path -> host path
    for (const json& mount : container.at("volumeMounts")) {
      mounted[mount.at("mountPath")] = host_paths.at(mount.at("name"));
    }
    for (const char* path : {"/lib/modules", "/usr/src", "/sys/kernel/debug", "/sys/kernel/tracing"}) {
      EXPECT_EQ(mounted[path], path) << "the node's " << path << " at the same path";
    }

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

}  // namespace
}  // namespace tcptrace
