#include "kallsyms_view.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "diagnostics.h"

namespace tcptrace {
namespace {

constexpr const char* kKallsyms = "/proc/kallsyms";

// On the calling thread only: a private copy of the mount namespace (with
// CLONE_FS, so that a thread of a multi-threaded process may do it), with
// mount events kept from propagating back to the machine's namespace, and
// `text` shown at /proc/kallsyms.
bool enter_view(const std::string& text) {
  if (::unshare(CLONE_FS | CLONE_NEWNS) != 0) return false;
  // systemd makes / a shared mount; without this the bind mount below would
  // appear in the machine's namespace too.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  char path[] = "/tmp/tcptrace-kallsyms-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return false;
  const bool written = write_all(fd, text) == 0;
  ::close(fd);
  // The mount keeps the file's inode; the name is not needed after it.
  const bool mounted = written && ::mount(path, kKallsyms, nullptr, MS_BIND, nullptr) == 0;
  ::unlink(path);
  return mounted;
}

}  // namespace

std::string kallsyms_view_text(ProbeReadHelpers helpers) {
  std::string text;
  if (helpers.kernel) text += "ffffffff81000000 T bpf_probe_read_kernel\n";
  if (helpers.user) text += "ffffffff81000010 T bpf_probe_read_user\n";
  return text;
}

bool run_with_kallsyms_view(const std::string& text, const std::function<void()>& work) {
  bool viewed = false;
  std::thread thread([&] {
    viewed = enter_view(text);
    work();
  });
  thread.join();
  return viewed;
}

}  // namespace tcptrace
