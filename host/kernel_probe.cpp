#include "kernel_probe.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "unique_fd.h"

namespace tcptrace {
namespace {

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string tracefs_root() {
  // The same order BCC uses (libbpf.c: get_tracefs_path).
  return exists("/sys/kernel/debug/tracing/events") ? "/sys/kernel/debug/tracing" : "/sys/kernel/tracing";
}

MethodSupport probe_tracepoints() {
  if (exists(tracefs_root() + "/events")) return {true, ""};
  return {false, "tracefs is not mounted, so tracepoints cannot be attached"};
}

// A kprobe needs CONFIG_KPROBES and, to attach, either the perf "kprobe" PMU
// (Linux 4.17+) or tracefs's kprobe_events (CONFIG_KPROBE_EVENTS). BCC tries
// the PMU first and falls back to kprobe_events.
MethodSupport probe_kprobes() {
  if (exists("/sys/bus/event_source/devices/kprobe/type")) return {true, ""};
  if (exists(tracefs_root() + "/kprobe_events")) return {true, ""};
  return {false,
          "this kernel has no kprobe support (no kprobe PMU in /sys/bus/event_source/devices, no kprobe_events "
          "in tracefs: CONFIG_KPROBES is off)"};
}

// fentry (kfunc) needs kernel BTF and the tracing program type (Linux 5.5+),
// and some kernels are built or locked down without them. Loading and
// attaching a two-instruction fentry program answers both. The target is
// bpf_fentry_test1, which the kernel keeps for exactly this kind of test
// (net/bpf/test_run.c); tcp_v4_connect stands in where it is missing.
MethodSupport probe_kfunc() {
  if (!exists("/sys/kernel/btf/vmlinux")) {
    return {false, "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing: CONFIG_DEBUG_INFO_BTF is off)"};
  }
  // libbpf prints its own warnings to stderr; the reason below says it all.
  libbpf_print_fn_t previous = libbpf_set_print(nullptr);
  int btf_id = libbpf_find_vmlinux_btf_id("bpf_fentry_test1", BPF_TRACE_FENTRY);
  if (btf_id < 0) btf_id = libbpf_find_vmlinux_btf_id("tcp_v4_connect", BPF_TRACE_FENTRY);
  libbpf_set_print(previous);
  if (btf_id < 0) return {false, "no fentry target found in the kernel's BTF"};

  const bpf_insn program[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},  // r0 = 0
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},                   // exit
  };
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_FENTRY,
              .attach_btf_id = static_cast<__u32>(btf_id));
  UniqueFd prog(bpf_prog_load(BPF_PROG_TYPE_TRACING, "tcptrace_probe", "GPL", program, 2, &opts));
  if (!prog.valid()) {
    return {false, std::string("the kernel refuses the tracing program type that kfunc/fentry needs (") +
                       std::strerror(errno) + ")"};
  }
  UniqueFd link(bpf_raw_tracepoint_open(nullptr, prog.get()));
  if (!link.valid()) {
    return {false, std::string("the kernel cannot attach fentry programs (") + std::strerror(errno) + ")"};
  }
  return {true, ""};
}

// Ring buffers (Linux 5.8+): creating a one-page one answers.
MethodSupport probe_ring_buffer() {
  UniqueFd map(bpf_map_create(BPF_MAP_TYPE_RINGBUF, "tcptrace_probe", 0, 0, 4096, nullptr));
  if (map.valid()) return {true, ""};
  return {false, std::string("this kernel cannot create BPF ring buffers (") + std::strerror(errno) + ")"};
}

}  // namespace

ProbeReadHelpers probe_read_helpers() {
  // libbpf loads a tracepoint program calling the helper; the verifier
  // rejects an unknown helper id (kernel/bpf/verifier.c: "invalid func").
  libbpf_print_fn_t previous = libbpf_set_print(nullptr);
  ProbeReadHelpers helpers;
  helpers.kernel = libbpf_probe_bpf_helper(BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_probe_read_kernel, nullptr) == 1;
  helpers.user = libbpf_probe_bpf_helper(BPF_PROG_TYPE_TRACEPOINT, BPF_FUNC_probe_read_user, nullptr) == 1;
  libbpf_set_print(previous);
  return helpers;
}

MethodSupport probe_ring_buffer_support() { return probe_ring_buffer(); }

KernelCapabilities probe_kernel_capabilities() {
  KernelCapabilities caps;
  caps.tracepoint = probe_tracepoints();
  caps.kprobe = probe_kprobes();
  caps.kfunc = probe_kfunc();
  caps.ring_buffer = probe_ring_buffer();
  return caps;
}

}  // namespace tcptrace
