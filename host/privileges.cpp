#include "privileges.h"

#include <linux/bpf.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace tcptrace {
namespace {

#ifndef CAP_BPF
#define CAP_BPF 39
#endif

// CAP_BPF where the kernel knows it (Linux 5.8+); before, bpf() asks for
// CAP_SYS_ADMIN.
int bpf_capability() { return prctl(PR_CAPBSET_READ, CAP_BPF, 0, 0, 0) >= 0 ? CAP_BPF : CAP_SYS_ADMIN; }

long bpf_call(int command, union bpf_attr* attr) {
  return syscall(SYS_bpf, command, attr, sizeof(*attr));
}

std::string unprivileged_bpf_disabled() {
  std::ifstream file("/proc/sys/kernel/unprivileged_bpf_disabled");
  std::string value;
  std::getline(file, value);
  return value.empty() ? "?" : value;
}

// Whether the calling thread's effective set holds CAP_SETPCAP.
bool holds_setpcap() {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) return true;
  return (data[0].effective & (1u << CAP_SETPCAP)) != 0;
}

}  // namespace

Status drop_privileges(const PrivilegePlan& plan) {
  const int kept = plan.keep_bpf ? bpf_capability() : -1;
  // The bounding set first: emptying it needs CAP_SETPCAP, which goes next.
  // A process started without CAP_SETPCAP (a container granted only what
  // tracing needs, deploy/daemonset.yaml) keeps its bounding set: it only
  // caps what an execve() may add, and no_new_privs, set below, already
  // keeps an execve() from adding anything (cap_bprm_creds_from_file
  // intersects the new permitted set with the old, which is empty).
  for (int cap = 0; cap <= 63; ++cap) {
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0 || errno == EINVAL) continue;
    if (errno == EPERM && prctl(PR_CAPBSET_READ, CAP_SETPCAP, 0, 0, 0) >= 0 && !holds_setpcap()) break;
    return runtime_error(std::string("cannot drop capabilities (PR_CAPBSET_DROP): ") + std::strerror(errno));
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return runtime_error(std::string("cannot drop capabilities (ambient): ") + std::strerror(errno));
  }
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  __user_cap_data_struct data[2] = {};
  if (kept >= 0) {
    data[kept / 32].effective = data[kept / 32].permitted = 1u << (kept % 32);
  }
  if (syscall(SYS_capset, &header, data) != 0) {
    return runtime_error(std::string("cannot drop capabilities (capset): ") + std::strerror(errno));
  }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return runtime_error(std::string("cannot set no_new_privs: ") + std::strerror(errno));
  }
  return {};
}

PrivilegePlan plan_privilege_drop() {
  PrivilegePlan plan;
  union bpf_attr create {};
  create.map_type = BPF_MAP_TYPE_ARRAY;
  create.key_size = 4;
  create.value_size = 8;
  create.max_entries = 1;
  const int map = static_cast<int>(bpf_call(BPF_MAP_CREATE, &create));
  if (map < 0) {
    plan.keep_bpf = true;
    plan.reason = std::string("cannot create a map to ask the kernel: ") + std::strerror(errno);
    return plan;
  }
  const pid_t child = fork();
  if (child == 0) {
    if (!drop_privileges(PrivilegePlan{})) _exit(2);
    uint32_t key = 0;
    uint64_t value = 0;
    union bpf_attr lookup {};
    lookup.map_fd = static_cast<uint32_t>(map);
    lookup.key = reinterpret_cast<uint64_t>(&key);
    lookup.value = reinterpret_cast<uint64_t>(&value);
    _exit(bpf_call(BPF_MAP_LOOKUP_ELEM, &lookup) == 0 ? 0 : 1);
  }
  int status = 0;
  const bool waited = child > 0 && waitpid(child, &status, 0) == child;
  close(map);
  if (waited && WIFEXITED(status) && WEXITSTATUS(status) == 0) return plan;
  plan.keep_bpf = true;
  plan.reason = "this kernel refuses bpf() on the maps the tool holds without CAP_BPF "
                "(kernel.unprivileged_bpf_disabled=" + unprivileged_bpf_disabled() + ")";
  return plan;
}

uint64_t effective_capabilities() {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) return 0;
  return static_cast<uint64_t>(data[1].effective) << 32 | data[0].effective;
}

}  // namespace tcptrace
