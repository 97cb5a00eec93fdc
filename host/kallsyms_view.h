// BCC 0.26 reads all of /proc/kallsyms on every compile (122 000 symbols on
// this project's CI kernel: a third of the time to `ready` and a large part
// of the peak RSS) only to ask whether two symbols exist:
// b_frontend_action.cc DoMiscWorkAround() resolves bpf_probe_read_kernel (if
// it is missing, the program's bpf_probe_read_kernel/_user calls are
// #defined to the old bpf_probe_read), and check_bpf_probe_read_user()
// resolves bpf_probe_read_user for programs that call it.
//
// The host answers those questions itself, by asking the verifier whether
// the helpers exist (kernel_probe.h), and runs BCC's compile on a thread with
// a private mount namespace in which /proc/kallsyms is a bind mount of a file
// listing just those symbols. The namespace dies with the thread; nothing
// changes for the rest of the process or the machine. Without the privilege
// to do so (CAP_SYS_ADMIN), the compile runs as before, on the real file.
#pragma once

#include <functional>
#include <string>

namespace tcptrace {

struct ProbeReadHelpers {
  bool kernel = false;  // bpf_probe_read_kernel / _str (Linux 5.5+)
  bool user = false;    // bpf_probe_read_user / _str (Linux 5.5+)
};

// The text the view shows: one `kallsyms` line per helper the kernel has,
// at an address BCC accepts as a kernel one (bcc_proc.c skips addresses
// below the kernel's address space and data symbols).
std::string kallsyms_view_text(ProbeReadHelpers helpers);

// Runs `work` on a new thread and waits for it. Returns true when that
// thread saw `text` as /proc/kallsyms, false when it ran with the real one
// (no privilege, or any step of the set-up failed).
bool run_with_kallsyms_view(const std::string& text, const std::function<void()>& work);

}  // namespace tcptrace
