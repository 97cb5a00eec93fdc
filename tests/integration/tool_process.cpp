#include "tool_process.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <linux/bpf.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace tcptrace::testing {

// Every tool these tests start (through ToolProcess or a shell) compiles its
// program, as the tests' expectations about compile messages assume; the
// compile cache's own tests ask for a cache with --cache-dir, which this
// does not turn off (app.cpp).
const bool kCompileCacheOffForTests = ::setenv("TCPTRACE_TEST_NO_CACHE", "1", 0) == 0;

ToolProcess::ToolProcess(std::vector<std::string> args) : ToolProcess({}, std::move(args)) {}

ToolProcess::ToolProcess(std::vector<std::string> wrapper, std::vector<std::string> args, std::string binary) {
  int out[2];
  int err[2];
  if (pipe(out) != 0 || pipe(err) != 0) {
    ADD_FAILURE() << "pipe() failed";
    return;
  }
  std::vector<char*> argv;
  for (auto& w : wrapper) argv.push_back(w.data());
  argv.push_back(binary.data());
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t test_process = getpid();
  pid_ = fork();
  if (pid_ == 0) {
    // A test process killed by ctest's TIMEOUT (or a crash) runs no
    // destructor: the kernel ends its tool too, detaching its probes.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != test_process) _exit(127);
    dup2(out[1], STDOUT_FILENO);
    dup2(err[1], STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    close(err[0]);
    close(err[1]);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  stdout_reader_ = std::thread([this, fd = out[0]] { read_loop(fd, stdout_); });
  stderr_reader_ = std::thread([this, fd = err[0]] { read_loop(fd, stderr_); });
}

ToolProcess::~ToolProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    reap(std::chrono::seconds(10));
  }
  resume_stderr();  // the reader thread must reach the end of the pipe
  if (stdout_reader_.joinable()) stdout_reader_.join();
  if (stderr_reader_.joinable()) stderr_reader_.join();
}

void ToolProcess::read_loop(int fd, std::string& sink) {
  char buf[65536];
  while (true) {
    if (&sink == &stderr_) {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return !stderr_paused_; });
    }
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard lock(mutex_);
    sink.append(buf, static_cast<size_t>(n));
    changed_.notify_all();
  }
  close(fd);
  std::lock_guard lock(mutex_);
  changed_.notify_all();
}

void ToolProcess::pause_stderr() {
  std::lock_guard lock(mutex_);
  stderr_paused_ = true;
}

void ToolProcess::resume_stderr() {
  std::lock_guard lock(mutex_);
  stderr_paused_ = false;
  changed_.notify_all();
}

bool ToolProcess::wait_for_stderr(const std::string& needle, std::chrono::milliseconds timeout) {
  return wait_for_stderr_text([&](const std::string& text) { return text.find(needle) != std::string::npos; },
                              timeout);
}

bool ToolProcess::wait_for_stderr_line(const std::function<bool(std::string_view line)>& matches,
                                       std::chrono::milliseconds timeout) {
  return wait_for_stderr_text(
      [&](const std::string& text) {
        // Only complete lines: a line still being written could match a
        // prefix and then go on differently.
        size_t start = 0;
        for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
          if (matches(std::string_view(text).substr(start, end - start))) return true;
        }
        return false;
      },
      timeout);
}

bool ToolProcess::wait_until_ready(std::chrono::milliseconds timeout) {
  return wait_for_stderr_line(line_starting_with(std::string(kReadyLinePrefix)), timeout);
}

bool ToolProcess::wait_for_stderr_text(const std::function<bool(const std::string& text)>& found,
                                       std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + scaled(timeout);
  std::unique_lock lock(mutex_);
  while (!found(stderr_)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    lock.unlock();
    int status = 0;
    if (!exited_ && waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    lock.lock();
    if (exited_) {
      // Give the reader a moment to collect the last words.
      changed_.wait_for(lock, std::chrono::milliseconds(200));
      return found(stderr_);
    }
    changed_.wait_for(lock, std::chrono::milliseconds(50));
  }
  return true;
}

bool ToolProcess::wait_for_lines(size_t lines, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + scaled(timeout);
  std::unique_lock lock(mutex_);
  while (static_cast<size_t>(std::count(stdout_.begin(), stdout_.end(), '\n')) < lines) {
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) return false;
  }
  return true;
}

int ToolProcess::reap(std::chrono::milliseconds timeout) {
  if (exited_) return exit_status_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

int ToolProcess::stop(int signal, std::chrono::milliseconds timeout) {
  if (exited_) return exit_status_;
  kill(pid_, signal);
  int status = reap(scaled(timeout));
  if (status == -1) {
    kill(pid_, SIGKILL);
    reap(std::chrono::seconds(5));
    return -1;
  }
  if (stdout_reader_.joinable()) stdout_reader_.join();
  if (stderr_reader_.joinable()) stderr_reader_.join();
  return status;
}

int ToolProcess::wait_exit(std::chrono::milliseconds timeout) {
  int status = reap(scaled(timeout));
  if (status != -1) {
    if (stdout_reader_.joinable()) stdout_reader_.join();
    if (stderr_reader_.joinable()) stderr_reader_.join();
  }
  return status;
}

std::string ToolProcess::stdout_text() {
  std::lock_guard lock(mutex_);
  return stdout_;
}

std::string ToolProcess::stderr_text() {
  std::lock_guard lock(mutex_);
  return stderr_;
}

std::vector<std::string> ToolProcess::stdout_lines() {
  std::vector<std::string> lines;
  const std::string text = stdout_text();
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      ADD_FAILURE() << "stdout ends with an incomplete line: " << text.substr(start);
      break;
    }
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

std::vector<nlohmann::json> ToolProcess::events() {
  std::vector<nlohmann::json> events;
  for (const std::string& line : stdout_lines()) {
    try {
      nlohmann::json event = nlohmann::json::parse(line);
      if (!event.is_object()) {
        ADD_FAILURE() << "stdout line is not a JSON object: " << line;
        continue;
      }
      events.push_back(std::move(event));
    } catch (const nlohmann::json::exception& e) {
      ADD_FAILURE() << "stdout line is not valid JSON (" << e.what() << "): " << line;
    }
  }
  return events;
}

std::unique_ptr<ToolProcess> start_ready(std::vector<std::string> args) {
  auto tool = std::make_unique<ToolProcess>(std::move(args));
  if (!tool->wait_until_ready(std::chrono::seconds(120))) {
    ADD_FAILURE() << "tool did not become ready; stderr:\n" << tool->stderr_text();
    return nullptr;
  }
  return tool;
}

std::function<bool(std::string_view)> line_starting_with(std::string prefix) {
  return [prefix = std::move(prefix)](std::string_view line) { return line.substr(0, prefix.size()) == prefix; };
}

std::function<bool(std::string_view)> line_ending_with(std::string suffix) {
  return [suffix = std::move(suffix)](std::string_view line) {
    return line.size() >= suffix.size() && line.substr(line.size() - suffix.size()) == suffix;
  };
}

std::chrono::milliseconds scaled(std::chrono::milliseconds timeout) {
  const char* text = std::getenv("TCPTRACE_TEST_TIMEOUT_SCALE");
  const int scale = text != nullptr ? std::atoi(text) : 1;
  return timeout * (scale > 0 ? scale : 1);
}

// TCPTRACE_TEST_BINARY runs the tests against another build of the tool
// (an earlier commit's, to see a new test fail there).
std::string tool_binary() {
  const char* other = std::getenv("TCPTRACE_TEST_BINARY");
  return other != nullptr && *other != '\0' ? other : TCPTRACE_BINARY;
}

bool running_in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

std::string missing_privileges() {
  if (geteuid() != 0) return "integration tests load BPF programs and need root";
  if (access("/sys/fs/bpf", F_OK) != 0 && access("/proc/sys/kernel/unprivileged_bpf_disabled", F_OK) != 0) {
    return "this kernel has no BPF support";
  }
  return "";
}

namespace {
// Every id of one kind of BPF object: BPF_PROG_GET_NEXT_ID,
// BPF_MAP_GET_NEXT_ID or BPF_LINK_GET_NEXT_ID.
std::set<uint32_t> bpf_ids(int next_id_command) {
  std::set<uint32_t> ids;
  uint32_t id = 0;
  while (true) {
    bpf_attr attr{};
    attr.start_id = id;
    if (syscall(__NR_bpf, next_id_command, &attr, sizeof attr) != 0) break;
    id = attr.next_id;
    ids.insert(id);
  }
  return ids;
}
}  // namespace

std::set<uint32_t> loaded_bpf_program_ids() { return bpf_ids(BPF_PROG_GET_NEXT_ID); }

BpfObjectIds loaded_bpf_objects() {
  return {bpf_ids(BPF_PROG_GET_NEXT_ID), bpf_ids(BPF_MAP_GET_NEXT_ID), bpf_ids(BPF_LINK_GET_NEXT_ID)};
}

std::string wait_until_released(const BpfObjectIds& before) {
  std::string left;
  const auto deadline = std::chrono::steady_clock::now() + scaled(std::chrono::seconds(5));
  while (true) {
    const BpfObjectIds now = loaded_bpf_objects();
    left.clear();
    const auto describe = [&](const char* kind, const std::set<uint32_t>& was, const std::set<uint32_t>& is) {
      for (uint32_t id : is) {
        if (!was.count(id)) left += (left.empty() ? "" : ", ") + std::string(kind) + " " + std::to_string(id);
      }
    };
    describe("program", before.programs, now.programs);
    describe("map", before.maps, now.maps);
    describe("link", before.links, now.links);
    if (left.empty() || std::chrono::steady_clock::now() >= deadline) return left;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::string own_comm() {
  std::ifstream file("/proc/self/comm");
  std::string comm;
  std::getline(file, comm);
  return comm;
}

}  // namespace tcptrace::testing
