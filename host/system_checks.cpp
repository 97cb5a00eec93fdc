#include "system_checks.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

namespace tcptrace {
namespace {

constexpr int kCapSysAdmin = 21;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

uint64_t effective_capabilities() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  }
  return 0;
}

bool has(uint64_t caps, int cap) { return (caps >> cap) & 1; }

bool exists(const char* path) {
  struct stat st {};
  return ::stat(path, &st) == 0;
}

}  // namespace

Status check_privileges() {
  const uint64_t caps = effective_capabilities();
  if (has(caps, kCapSysAdmin)) return {};
  if (has(caps, kCapBpf) && has(caps, kCapPerfmon)) return {};
  std::string missing;
  if (!has(caps, kCapBpf)) missing += "CAP_BPF";
  if (!has(caps, kCapPerfmon)) missing += std::string(missing.empty() ? "" : " and ") + "CAP_PERFMON";
  return runtime_error("tracing needs root, or " + missing +
                       " (or CAP_SYS_ADMIN), which this process lacks: run it with sudo");
}

Status ensure_tracefs(std::string& note) {
  if (exists("/sys/kernel/debug/tracing/events") || exists("/sys/kernel/tracing/events")) return {};
  if (::mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr) == 0) {
    note = "mounted tracefs at /sys/kernel/tracing (it was not mounted)";
    return {};
  }
  const int err = errno;
  return runtime_error(std::string("tracefs is not mounted and mounting it failed (") + std::strerror(err) +
                       "): run 'mount -t tracefs nodev /sys/kernel/tracing' as root");
}

std::string perf_event_refusal_reason(int error, int paranoid, bool has_sys_admin) {
  if (error != EACCES || paranoid <= 2 || has_sys_admin) return "";
  return "kernel.perf_event_paranoid is " + std::to_string(paranoid) +
         ", a level at which Debian and Ubuntu kernels allow perf_event_open() only with CAP_SYS_ADMIN "
         "(CAP_PERFMON is not enough): grant CAP_SYS_ADMIN, or set kernel.perf_event_paranoid=2";
}

std::string perf_event_refusal_reason(int error) {
  if (error != EACCES) return "";
  std::ifstream file("/proc/sys/kernel/perf_event_paranoid");
  int paranoid = 2;
  if (!(file >> paranoid)) return "";
  return perf_event_refusal_reason(error, paranoid, has(effective_capabilities(), kCapSysAdmin));
}

}  // namespace tcptrace
