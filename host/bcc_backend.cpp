#include "bcc_backend.h"

#include <bcc/bcc_common.h>
#include <bcc/bcc_elf.h>
#include <bcc/bpf_module.h>
#include <bcc/libbpf.h>
#include <bcc/perf_reader.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include "kallsyms_view.h"
#include "kernel_probe.h"
#include "system_checks.h"

// libbcc's own (common.cc): where a tracepoint's format file is, and the
// struct tp_frontend_action.cc inserts above each probe that takes a
// `struct tracepoint__CATEGORY__EVENT *`, made from that file. libbcc
// exports both but installs no header declaring them.
namespace ebpf {
std::string tracepoint_format_file(std::string const& category, std::string const& event);
std::string parse_tracepoint(std::istream& input, std::string const& category, std::string const& event);
}  // namespace ebpf

// libbpf's, as libbcc links it; its header clashes with BCC's own copy of
// the libbpf declarations, so it is declared here.
extern "C" int libbpf_num_possible_cpus(void);

namespace tcptrace::bcc {

size_t possible_cpu_count();

namespace {

// libbcc writes some messages to stdout with std::cout (loader.cc: "Unable to
// find kernel headers"), and stdout carries only event lines. While BCC runs
// its compiler, stdout is pointed at stderr.
class StdoutToStderr {
 public:
  StdoutToStderr() {
    std::fflush(stdout);
    saved_ = UniqueFd(::dup(STDOUT_FILENO));
    if (saved_.valid()) ::dup2(STDERR_FILENO, STDOUT_FILENO);
  }
  ~StdoutToStderr() {
    std::fflush(stdout);
    if (saved_.valid()) ::dup2(saved_.get(), STDOUT_FILENO);
  }
  StdoutToStderr(const StdoutToStderr&) = delete;
  StdoutToStderr& operator=(const StdoutToStderr&) = delete;

 private:
  UniqueFd saved_;
};

// clang prints diagnostics to stderr (loader.cc: TextDiagnosticPrinter on
// llvm::errs()). While BCC compiles, stderr goes to an in-memory file so the
// host can tell errors in the program from errors in kernel headers, and can
// point them at the user's file.
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    file_ = UniqueFd(::memfd_create("tcptrace-clang-diagnostics", MFD_CLOEXEC));
    saved_ = UniqueFd(::dup(STDERR_FILENO));
    if (file_.valid() && saved_.valid()) ::dup2(file_.get(), STDERR_FILENO);
  }
  ~StderrCapture() { restore(); }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  std::string finish() {
    restore();
    std::string text;
    if (!file_.valid()) return text;
    char buf[4096];
    off_t offset = 0;
    ssize_t n;
    while ((n = ::pread(file_.get(), buf, sizeof buf, offset)) > 0) {
      text.append(buf, static_cast<size_t>(n));
      offset += n;
    }
    return text;
  }

 private:
  void restore() {
    if (saved_.valid()) {
      std::fflush(stderr);
      ::dup2(saved_.get(), STDERR_FILENO);
      saved_.reset();
    }
  }
  UniqueFd file_;
  UniqueFd saved_;
};

// Sets an environment variable for the lifetime of this object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (!value) return;
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value->c_str(), 1);
    active_ = true;
  }
  ~ScopedEnv() {
    if (!active_) return;
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
  bool active_ = false;
};

bpf_prog_type program_type_for(ProbeKind kind) {
  switch (kind) {
    case ProbeKind::tracepoint: return BPF_PROG_TYPE_TRACEPOINT;
    case ProbeKind::raw_tracepoint: return BPF_PROG_TYPE_RAW_TRACEPOINT;
    case ProbeKind::kprobe:
    case ProbeKind::kretprobe: return BPF_PROG_TYPE_KPROBE;
    case ProbeKind::kfunc:
    case ProbeKind::kretfunc: return BPF_PROG_TYPE_TRACING;
  }
  return BPF_PROG_TYPE_UNSPEC;
}

// The verifier's verdict is at the end of its log; keep the last lines.
std::string tail_lines(const char* log, size_t max_lines) {
  std::string text(log);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  size_t pos = text.size();
  for (size_t lines = 0; lines < max_lines && pos != std::string::npos && pos > 0; ++lines) {
    pos = text.rfind('\n', pos - 1);
  }
  std::string tail = pos == std::string::npos ? text : text.substr(pos + 1);
  for (char& c : tail) {
    if (c == '\n') c = ';';
  }
  return tail;
}

std::string errno_text(int err) { return std::string(std::strerror(err)); }

// ---- attachments ---------------------------------------------------------

// Tracepoints: a perf event on the tracepoint with the program set on it.
class TracepointAttachment final : public Attachment {
 public:
  TracepointAttachment(ProbeSpec probe, int perf_fd) : Attachment(std::move(probe)), perf_fd_(perf_fd) {}
  ~TracepointAttachment() override { bpf_close_perf_event_fd(perf_fd_); }

 private:
  int perf_fd_;
};

// kprobes: a perf event on a kprobe event created in tracefs under a name of
// our own; both the perf event and the kprobe event are removed.
class KprobeAttachment final : public Attachment {
 public:
  KprobeAttachment(ProbeSpec probe, int perf_fd, std::string event_name)
      : Attachment(std::move(probe)), perf_fd_(perf_fd), event_name_(std::move(event_name)) {}
  ~KprobeAttachment() override {
    bpf_close_perf_event_fd(perf_fd_);
    bpf_detach_kprobe(event_name_.c_str());
  }

 private:
  int perf_fd_;
  std::string event_name_;
};

// Raw tracepoints and kfunc/fentry: a BPF link fd; closing it detaches.
class LinkAttachment final : public Attachment {
 public:
  LinkAttachment(ProbeSpec probe, int link_fd) : Attachment(std::move(probe)), link_fd_(link_fd) {}

 private:
  UniqueFd link_fd_;
};

// ---- output readers ------------------------------------------------------

class BufferReader final : public OutputReader {
 public:
  static constexpr int kWakeupEvents = 32;

  BufferReader(EventSink& sink) : sink_(sink) {}
  ~BufferReader() override {
    for (auto* reader : perf_readers_) perf_reader_free(reader);
    if (ring_ != nullptr) bpf_free_ringbuf(ring_);
  }

  Status add_perf_table(size_t index, const OutputTable& table, int pages) {
    for (int cpu : online_cpus()) {
      cookies_.push_back(std::make_unique<Cookie>(Cookie{this, index, cpu}));
      Cookie* cookie = cookies_.back().get();
      // The kernel wakes the reader only every kWakeupEvents samples on a
      // CPU (perf_event_attr.wakeup_events) instead of at every one; the
      // 100 ms poll timeout bounds how long a lone event waits.
      bcc_perf_buffer_opts opts{};
      opts.pid = -1;
      opts.cpu = cpu;
      opts.wakeup_events = kWakeupEvents;
      void* reader = bpf_open_perf_buffer_opts(&BufferReader::on_perf_sample, &BufferReader::on_perf_lost, cookie,
                                               pages, &opts);
      if (reader == nullptr) {
        const int error = errno;
        const std::string reason = perf_event_refusal_reason(error);
        return runtime_error("cannot open a perf buffer for table '" + table.name + "' on CPU " +
                             std::to_string(cpu) + ": " + errno_text(error) + (reason.empty() ? "" : "; " + reason));
      }
      perf_readers_.push_back(static_cast<perf_reader*>(reader));
      int reader_fd = perf_reader_fd(perf_readers_.back());
      int key = cpu;
      if (bpf_update_elem(table.map_fd, &key, &reader_fd, 0) != 0) {
        return runtime_error("cannot register the perf buffer of CPU " + std::to_string(cpu) +
                             " in table '" + table.name + "': " + errno_text(errno));
      }
    }
    return {};
  }

  Status add_ring_table(size_t index, const OutputTable& table) {
    cookies_.push_back(std::make_unique<Cookie>(Cookie{this, index, -1}));
    Cookie* cookie = cookies_.back().get();
    if (ring_ == nullptr) {
      ring_ = static_cast<ring_buffer*>(bpf_new_ringbuf(table.map_fd, &BufferReader::on_ring_sample, cookie));
      if (ring_ == nullptr) {
        return runtime_error("cannot open ring buffer '" + table.name + "': " + errno_text(errno));
      }
    } else if (bpf_add_ringbuf(ring_, table.map_fd, &BufferReader::on_ring_sample, cookie) != 0) {
      return runtime_error("cannot open ring buffer '" + table.name + "': " + errno_text(errno));
    }
    return {};
  }

  bool poll(int timeout_ms) override {
    // Perf and ring buffers have separate poll calls; with both kinds the
    // wait is split (programs mixing them are rare and never hot).
    if (!perf_readers_.empty()) {
      const int wait = ring_ != nullptr ? timeout_ms / 2 : timeout_ms;
      int rc = perf_reader_poll(static_cast<int>(perf_readers_.size()), perf_readers_.data(), wait);
      if (rc < 0 && errno != EINTR) return false;
      // With wakeup_events > 1 a buffer holding fewer samples never becomes
      // readable: read every buffer once per poll, woken or not.
      perf_reader_consume(static_cast<int>(perf_readers_.size()), perf_readers_.data());
    }
    if (ring_ != nullptr) {
      const int wait = perf_readers_.empty() ? timeout_ms : timeout_ms / 2;
      int rc = bpf_poll_ringbuf(ring_, wait);
      if (rc < 0 && rc != -EINTR) return false;
      // Programs may submit without waking the reader (BPF_RB_NO_WAKEUP,
      // to batch wake-ups): read what is there even when nobody woke us.
      bpf_consume_ringbuf(ring_);
    }
    return true;
  }

  void drain() override {
    if (!perf_readers_.empty()) {
      perf_reader_consume(static_cast<int>(perf_readers_.size()), perf_readers_.data());
    }
    if (ring_ != nullptr) bpf_consume_ringbuf(ring_);
  }

 private:
  struct Cookie {
    BufferReader* reader;
    size_t table_index;
    int cpu;
  };

  static void on_perf_sample(void* cookie, void* data, int size) {
    auto* c = static_cast<Cookie*>(cookie);
    c->reader->sink_.on_event(c->table_index, data, size < 0 ? 0 : static_cast<size_t>(size));
  }
  static void on_perf_lost(void* cookie, uint64_t count) {
    auto* c = static_cast<Cookie*>(cookie);
    c->reader->sink_.on_lost(c->table_index, c->cpu, count);
  }
  static int on_ring_sample(void* cookie, void* data, size_t size) {
    auto* c = static_cast<Cookie*>(cookie);
    c->reader->sink_.on_event(c->table_index, data, size);
    return 0;
  }

  EventSink& sink_;
  std::vector<std::unique_ptr<Cookie>> cookies_;
  std::vector<perf_reader*> perf_readers_;
  ring_buffer* ring_ = nullptr;
};

}  // namespace

namespace {

struct CodeRange {
  void* start;
  size_t length;
};

// The executable mappings of Debian's shared libLLVM and libclang-cpp, which
// libbcc compiles with: ~75 MB of code, most of it touched by one compile.
// They are never written (r-xp), so their pages equal the file's and
// MADV_DONTNEED only drops them from this process; the page cache keeps
// them, and the next call faults them back in at the cost of a minor fault.
// Writable or read-only relocated mappings are left alone: their pages
// differ from the file.
std::vector<CodeRange> compiler_code_ranges() {
  std::vector<CodeRange> ranges;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long start = 0, end = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &start, &end, perms) != 3) continue;
    if (std::string(perms) != "r-xp") continue;
    if (line.find("/libLLVM") == std::string::npos && line.find("/libclang") == std::string::npos) continue;
    ranges.push_back({reinterpret_cast<void*>(start), end - start});
  }
  return ranges;
}

void drop_pages(const std::vector<CodeRange>& ranges) {
  for (const CodeRange& range : ranges) ::madvise(range.start, range.length, MADV_DONTNEED);
}

// While BCC compiles, its three clang passes and LLVM's code generation each
// use a different part of that code. Left alone, every page any pass touched
// (and the 64 KB the kernel maps around each fault, mm/memory.c
// do_fault_around) stays resident until the end: a `states` compile peaked
// at 112 MB RSS, 73 MB of it compiler code. A watcher drops the code pages
// whenever the process's file-backed resident pages (statm's third field:
// mapped files, nearly all of it this code) grow a budget past what they
// were once the code was first dropped, so only the current working set
// stays mapped; the refaults come from the page cache. The budget (24 MB)
// is on top of what the process's other files hold then (8 MB here: the
// binary, libc, libbcc): those are not the compiler's, and dropping its
// code cannot shrink them. A sanitizer build's own binary and runtime hold
// 32 MB, and an absolute 32 MB budget there dropped the code every 2 ms:
// 18 000 madvise calls and 50 s for one connlat compile.
// The budget is on code, not on the whole RSS: a program that includes
// kernel headers such as net/sock.h grows clang's heap past any total
// budget, and dropping code then would only buy refaults (it did: 377 000
// minor faults and 2.7 s of system time for one connlat compile).
class CompilerCodeTrimmer {
 public:
  CompilerCodeTrimmer() : ranges_(compiler_code_ranges()) {
    if (ranges_.empty()) return;
    // What the libraries' static constructors touched before main() (45 MB
    // of LLVM's code on Debian 12) goes first.
    drop_pages(ranges_);
    const long page_size = ::sysconf(_SC_PAGESIZE);
    const long limit = file_resident_pages() * page_size + kCodeBudgetBytes;
    thread_ = std::thread([this, page_size, limit] {
      std::unique_lock lock(mutex_);
      while (!stopped_.wait_for(lock, kInterval, [this] { return stop_; })) {
        if (file_resident_pages() * page_size > limit) drop_pages(ranges_);
      }
    });
  }
  ~CompilerCodeTrimmer() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    stopped_.notify_one();
    thread_.join();
  }
  CompilerCodeTrimmer(const CompilerCodeTrimmer&) = delete;
  CompilerCodeTrimmer& operator=(const CompilerCodeTrimmer&) = delete;

 private:
  static constexpr std::chrono::milliseconds kInterval{2};
  static constexpr long kCodeBudgetBytes = 24L << 20;

  // The third field of /proc/self/statm: resident pages backed by a file.
  static long file_resident_pages() {
    UniqueFd fd(::open("/proc/self/statm", O_RDONLY | O_CLOEXEC));
    char text[128];
    const ssize_t n = fd.valid() ? ::read(fd.get(), text, sizeof text - 1) : -1;
    if (n <= 0) return 0;
    text[n] = '\0';
    long size = 0, resident = 0, file_backed = 0;
    return std::sscanf(text, "%ld %ld %ld", &size, &resident, &file_backed) == 3 ? file_backed : 0;
  }

  std::vector<CodeRange> ranges_;
  std::mutex mutex_;
  std::condition_variable stopped_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace

// ---- Program ---------------------------------------------------------------

Result<Program> Program::compile(const std::string& source, const std::vector<std::string>& cflags,
                                 const std::optional<std::string>& kernel_source_dir, std::string& diagnostics) {
  std::vector<const char*> flags;
  flags.reserve(cflags.size());
  for (const auto& flag : cflags) flags.push_back(flag.c_str());
  void* module = nullptr;
  {
    ScopedEnv kernel_source("BCC_KERNEL_SOURCE", kernel_source_dir);
    StderrCapture capture;
    {
      StdoutToStderr guard;
      // The helper probe loads two tiny programs once; every compile after
      // that reuses the answer (the kernel does not change under us).
      static const std::string kallsyms_text = kallsyms_view_text(probe_read_helpers());
      CompilerCodeTrimmer trimmer;
      run_with_kallsyms_view(kallsyms_text, [&] {
        // Not bpf_module_create_c_from_string(): BCC's C API always enables
        // the "rw engine", which JIT-compiles x86 code to print and parse
        // every table's keys and values (bpf_module.cc annotate()) and keeps
        // LLVM's context alive for it. The host never uses those functions;
        // without them BCC also frees its LLVM state right after code
        // generation (BPFModule::finalize).
        auto* compiled = new ebpf::BPFModule(0, nullptr, /*rw_engine_enabled=*/false, "", /*allow_rlimit=*/true,
                                             nullptr);
        if (compiled->load_string(source, flags.data(), static_cast<int>(flags.size())) != 0) {
          delete compiled;
          compiled = nullptr;
        }
        module = compiled;
      });
    }
    diagnostics = capture.finish();
  }
  if (module == nullptr) return runtime_error("the BPF program did not compile");
  return Program(module);
}

Program::Program(Program&& other) noexcept : module_(std::exchange(other.module_, nullptr)) {}

Program& Program::operator=(Program&& other) noexcept {
  if (this != &other) {
    if (module_ != nullptr) bpf_module_destroy(module_);
    module_ = std::exchange(other.module_, nullptr);
  }
  return *this;
}

Program::~Program() {
  if (module_ != nullptr) bpf_module_destroy(module_);
}

std::vector<std::string> Program::functions() const {
  std::vector<std::string> names;
  const size_t n = bpf_num_functions(module_);
  for (size_t i = 0; i < n; ++i) names.emplace_back(bpf_function_name(module_, i));
  return names;
}

std::vector<OutputTable> Program::output_tables() const {
  std::vector<OutputTable> tables;
  const size_t n = bpf_num_tables(module_);
  for (size_t i = 0; i < n; ++i) {
    const int type = bpf_table_type_id(module_, i);
    if (type != BPF_MAP_TYPE_PERF_EVENT_ARRAY && type != BPF_MAP_TYPE_RINGBUF) continue;
    OutputTable table;
    table.name = bpf_table_name(module_, i);
    table.kind = type == BPF_MAP_TYPE_RINGBUF ? OutputKind::ring_buffer : OutputKind::perf_buffer;
    table.map_fd = bpf_table_fd_id(module_, i);
    const size_t fields = bpf_perf_event_fields(module_, table.name.c_str());
    for (size_t f = 0; f < fields; ++f) {
      table.field_descriptions.emplace_back(bpf_perf_event_field(module_, table.name.c_str(), f));
    }
    tables.push_back(std::move(table));
  }
  return tables;
}

std::vector<DataTable> Program::data_tables() const {
  std::vector<DataTable> tables;
  const size_t n = bpf_num_tables(module_);
  for (size_t i = 0; i < n; ++i) {
    const int type = bpf_table_type_id(module_, i);
    if (type == BPF_MAP_TYPE_PERF_EVENT_ARRAY || type == BPF_MAP_TYPE_RINGBUF) continue;
    DataTable table;
    table.name = bpf_table_name(module_, i);
    table.map_type = type;
    if (const char* key = bpf_table_key_desc_id(module_, i)) table.key_description = key;
    if (const char* value = bpf_table_leaf_desc_id(module_, i)) table.value_description = value;
    table.key_size = bpf_table_key_size_id(module_, i);
    table.value_size = bpf_table_leaf_size_id(module_, i);
    table.max_entries = bpf_table_max_entries_id(module_, i);
    table.map_fd = bpf_table_fd_id(module_, i);
    tables.push_back(std::move(table));
  }
  return tables;
}

int Program::table_fd(const std::string& name) const { return bpf_table_fd(module_, name.c_str()); }

bool Program::has_table(const std::string& name) const {
  return bpf_table_fd(module_, name.c_str()) >= 0;
}

std::optional<std::string> Program::table_value_description(const std::string& name) const {
  if (!has_table(name)) return std::nullopt;
  const char* description = bpf_table_leaf_desc(module_, name.c_str());
  if (description == nullptr) return std::nullopt;
  return std::string(description);
}

Result<LoadedFunction> Program::load(const ProbeSpec& probe, std::string& bcc_output) const {
  const auto* insns = static_cast<const bpf_insn*>(bpf_function_start(module_, probe.function.c_str()));
  const size_t size = bpf_function_size(module_, probe.function.c_str());
  if (insns == nullptr || size == 0) {
    return runtime_error("the program has no function '" + probe.function + "'");
  }
  // Verifier log only on failure: logging a successful load costs time.
  static constexpr size_t kLogSize = 1 << 20;
  std::vector<char> log(kLogSize, '\0');
  int fd = -1;
  int err = 0;
  {
    // On failure BCC prints the log itself (libbpf.c: bpf_print_hints), in
    // terms of its /virtual/main.c.
    StderrCapture capture;
    errno = 0;
    fd = bcc_func_load(module_, program_type_for(probe.kind), probe.function.c_str(), insns,
                       static_cast<int>(size), bpf_module_license(module_), bpf_module_kern_version(module_), 0,
                       log.data(), static_cast<unsigned>(log.size()), nullptr, -1);
    err = errno;
    bcc_output = capture.finish();
  }
  if (fd < 0) {
    std::string message = "the kernel refused to load " + describe(probe) + " (" + probe.function +
                          "): " + errno_text(err);
    if (log[0] != '\0') message += "; verifier: " + tail_lines(log.data(), 3);
    return runtime_error(message);
  }
  return LoadedFunction(probe, UniqueFd(fd));
}

void Program::release_compiler_memory() {
  // libbcc's own text (only where it is linked statically).
  bcc_free_memory();
  // The compiler's code, which a running tracer never calls again; a later
  // compile (--watch) faults it back in.
  drop_pages(compiler_code_ranges());
}

// ---- LoadedFunction --------------------------------------------------------

namespace {

// BPF_OBJ_GET_INFO_BY_FD straight through bpf(2): libbcc's wrapper lives in
// libbpf, which this host does not otherwise link. Fills `info` (a
// bpf_prog_info or bpf_map_info); returns the length the kernel wrote (older
// kernels write a shorter struct), or nullopt with errno set.
template <class Info>
std::optional<uint32_t> object_info(int fd, Info& info) {
  bpf_attr attr{};
  attr.info.bpf_fd = static_cast<uint32_t>(fd);
  attr.info.info_len = sizeof(info);
  attr.info.info = reinterpret_cast<uint64_t>(&info);
  if (::syscall(__NR_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr)) != 0) return std::nullopt;
  return attr.info.info_len;
}

}  // namespace

std::optional<uint64_t> LoadedFunction::recursion_misses() const {
  bpf_prog_info info{};
  const std::optional<uint32_t> written = object_info(fd_.get(), info);
  if (!written) return std::nullopt;
  const uint32_t length = *written;
  // Kernels before 5.12 return a shorter struct without the field.
  const size_t end = offsetof(bpf_prog_info, recursion_misses) + sizeof(info.recursion_misses);
  if (length < end) return std::nullopt;
  return info.recursion_misses;
}

// ---- Attachment ------------------------------------------------------------

namespace {

// Tracepoints and kprobes attach through perf_event_open(), which some
// distributions' kernels refuse more often than mainline (system_checks.h).
Error perf_attach_error(const ProbeSpec& probe, int error) {
  const std::string reason = perf_event_refusal_reason(error);
  return runtime_error("cannot attach " + describe(probe) + ": " + errno_text(error) +
                       (reason.empty() ? "" : "; " + reason));
}

}  // namespace

Result<std::unique_ptr<Attachment>> Attachment::attach(const LoadedFunction& function) {
  const ProbeSpec& probe = function.probe();
  // libbcc's attach functions also print their failure to stderr (libbpf.c:
  // fprintf); the error returned here says the same with the probe's name,
  // so the user reads one line.
  StderrCapture libbcc_messages;
  errno = 0;
  switch (probe.kind) {
    case ProbeKind::tracepoint: {
      int fd = bpf_attach_tracepoint(function.fd(), probe.category.c_str(), probe.target.c_str());
      if (fd < 0) return perf_attach_error(probe, errno ? errno : ENOENT);
      return std::unique_ptr<Attachment>(new TracepointAttachment(probe, fd));
    }
    case ProbeKind::raw_tracepoint: {
      int fd = bpf_attach_raw_tracepoint(function.fd(), probe.target.c_str());
      if (fd < 0) return runtime_error("cannot attach " + describe(probe) + ": " + errno_text(errno));
      return std::unique_ptr<Attachment>(new LinkAttachment(probe, fd));
    }
    case ProbeKind::kfunc:
    case ProbeKind::kretfunc: {
      int fd = bpf_attach_kfunc(function.fd());
      if (fd < 0) return runtime_error("cannot attach " + describe(probe) + ": " + errno_text(errno));
      return std::unique_ptr<Attachment>(new LinkAttachment(probe, fd));
    }
    case ProbeKind::kprobe:
    case ProbeKind::kretprobe: {
      const bool entry = probe.kind == ProbeKind::kprobe;
      // kprobe event names are global in tracefs: include our pid so two
      // tracers never collide, and a leftover is traceable to its owner.
      const std::string event = std::string(entry ? "p_" : "r_") + probe.target + "_tcptrace_" +
                                std::to_string(::getpid());
      int fd = bpf_attach_kprobe(function.fd(), entry ? BPF_PROBE_ENTRY : BPF_PROBE_RETURN, event.c_str(),
                                 probe.target.c_str(), 0, 0);
      if (fd < 0) return perf_attach_error(probe, errno);
      return std::unique_ptr<Attachment>(new KprobeAttachment(probe, fd, event));
    }
  }
  return runtime_error("unknown probe kind");
}

// ---- OutputReader ----------------------------------------------------------

Result<std::unique_ptr<OutputReader>> OutputReader::open(const std::vector<OutputTable>& tables,
                                                         EventSink& sink, int pages_per_cpu) {
  auto reader = std::make_unique<BufferReader>(sink);
  for (size_t i = 0; i < tables.size(); ++i) {
    Status status = tables[i].kind == OutputKind::perf_buffer
                        ? reader->add_perf_table(i, tables[i], pages_per_cpu)
                        : reader->add_ring_table(i, tables[i]);
    if (!status) return std::move(status).take_error();
  }
  return std::unique_ptr<OutputReader>(std::move(reader));
}

std::vector<uint64_t> read_percpu_u64(int map_fd) {
  // Per-CPU values come back for every possible CPU, each 8-byte aligned.
  const size_t cpus = possible_cpu_count();
  std::vector<uint64_t> values(cpus, 0);
  uint32_t key = 0;
  if (bpf_lookup_elem(map_fd, &key, values.data()) != 0) values.assign(cpus, 0);
  return values;
}

Status check_percpu_array(int map_fd, const std::string& name, size_t entries, size_t words) {
  bpf_map_info info{};
  if (!object_info(map_fd, info)) {
    return runtime_error("cannot inspect map '" + name + "': " + std::strerror(errno));
  }
  const size_t value_size = words * sizeof(uint64_t);
  if (info.type != BPF_MAP_TYPE_PERCPU_ARRAY || info.key_size != sizeof(uint32_t) ||
      info.value_size != value_size || info.max_entries != entries) {
    return runtime_error("map '" + name + "' must be BPF_PERCPU_ARRAY(" + name + ", <" +
                         std::to_string(value_size) + "-byte value>, " + std::to_string(entries) +
                         "); it is a map of type " + std::to_string(info.type) + " with " +
                         std::to_string(info.max_entries) + " entries of " + std::to_string(info.value_size) +
                         " bytes");
  }
  return {};
}

Result<uint32_t> check_hash_map(int map_fd, const std::string& name, size_t key_size, size_t value_size) {
  bpf_map_info info{};
  if (!object_info(map_fd, info)) {
    return runtime_error("cannot inspect map '" + name + "': " + std::strerror(errno));
  }
  const bool hash = info.type == BPF_MAP_TYPE_HASH || info.type == BPF_MAP_TYPE_LRU_HASH;
  if (!hash || info.key_size != key_size || info.value_size != value_size) {
    return runtime_error("map '" + name + "' must be a hash or lru_hash map with " + std::to_string(key_size) +
                         "-byte keys and " + std::to_string(value_size) + "-byte values; it is a map of type " +
                         std::to_string(info.type) + " with " + std::to_string(info.key_size) + "-byte keys and " +
                         std::to_string(info.value_size) + "-byte values");
  }
  return info.max_entries;
}

int insert_map_element(int map_fd, const void* key, const void* value) {
  errno = 0;
  if (bpf_update_elem(map_fd, const_cast<void*>(key), const_cast<void*>(value), BPF_NOEXIST) == 0) return 0;
  return errno != 0 ? errno : EINVAL;
}

std::vector<uint64_t> read_percpu_array_sums(int map_fd, size_t entries, size_t words) {
  // A per-CPU lookup returns the value of every possible CPU, one after the
  // other (each a multiple of 8 bytes here). One batched lookup (Linux 5.6+:
  // BPF_MAP_LOOKUP_BATCH) reads the whole array in one system call instead
  // of one per entry; older kernels refuse it (EINVAL) and get the loop.
  const size_t cpus = possible_cpu_count();
  const size_t stride = cpus * words;
  std::vector<uint64_t> values(entries * stride, 0);
  std::vector<uint32_t> keys(entries, 0);
  size_t read = 0;
  uint32_t next = 0;
  bool batched = true;
  while (read < entries) {
    uint32_t count = static_cast<uint32_t>(entries - read);
    errno = 0;
    const int rc = bpf_lookup_batch(map_fd, read == 0 ? nullptr : &next, &next, keys.data() + read,
                                    values.data() + read * stride, &count);
    read += count;
    if (rc != 0 && errno == ENOENT) break;  // the end of the array
    if (rc != 0) {
      batched = false;
      break;
    }
  }
  if (!batched || read != entries) {
    for (uint32_t key = 0; key < entries; ++key) {
      keys[key] = key;
      if (bpf_lookup_elem(map_fd, &key, values.data() + key * stride) != 0) return {};
    }
  }
  std::vector<uint64_t> sums(entries * words, 0);
  for (size_t i = 0; i < entries; ++i) {
    if (keys[i] >= entries) return {};
    for (size_t cpu = 0; cpu < cpus; ++cpu) {
      for (size_t word = 0; word < words; ++word) sums[keys[i] * words + word] += values[i * stride + cpu * words + word];
    }
  }
  return sums;
}

// The kernel's own "operation not supported" (include/linux/errno.h), which
// bpf(2) returns as is and no libc header defines.
constexpr int kKernelENOTSUPP = 524;

Result<MapSnapshot> read_map(int map_fd, DataMapKind kind, size_t key_size, size_t value_size, size_t max_entries,
                             bool clear) {
  MapSnapshot snapshot;
  const bool percpu = kind == DataMapKind::percpu_hash || kind == DataMapKind::percpu_array;
  const bool array = kind == DataMapKind::array || kind == DataMapKind::percpu_array;
  snapshot.key_size = key_size;
  snapshot.cpus = percpu ? possible_cpu_count() : 1;
  snapshot.value_stride = percpu ? snapshot.cpus * ((value_size + 7) / 8 * 8) : value_size;
  std::vector<unsigned char> key(key_size), next(key_size), value(snapshot.value_stride);
  const std::vector<unsigned char> zeros(snapshot.value_stride, 0);
  auto fail = [&](const char* what) {
    return runtime_error(std::string("cannot ") + what + " map entries: " + errno_text(errno));
  };
  if (array) {
    // An array has every index from 0 to max_entries - 1.
    for (uint32_t index = 0; index < max_entries; ++index) {
      std::memcpy(key.data(), &index, std::min(key_size, sizeof index));
      if (bpf_lookup_elem(map_fd, key.data(), value.data()) != 0) return fail("read");
      if (clear && value != zeros && bpf_update_elem(map_fd, key.data(), const_cast<unsigned char*>(zeros.data()),
                                                     BPF_EXIST) != 0) {
        return fail("clear");
      }
      snapshot.keys.insert(snapshot.keys.end(), key.begin(), key.end());
      snapshot.values.insert(snapshot.values.end(), value.begin(), value.end());
      ++snapshot.entries;
    }
    return snapshot;
  }
  // A hash: collect the keys first. Deleting while walking would restart the
  // walk (get_next_key of a deleted key starts over); the bound stops a walk
  // that the program's inserts keep feeding.
  std::vector<unsigned char> keys;
  const void* previous = nullptr;
  size_t seen = 0;
  while (seen < max_entries && bpf_get_next_key(map_fd, const_cast<void*>(previous), next.data()) == 0) {
    keys.insert(keys.end(), next.begin(), next.end());
    key = next;
    previous = key.data();
    ++seen;
  }
  bool lookup_and_delete = true;
  for (size_t i = 0; i < seen; ++i) {
    unsigned char* k = keys.data() + i * key_size;
    int rc;
    if (clear && lookup_and_delete) {
      errno = 0;
      rc = bpf_lookup_and_delete(map_fd, k, value.data());
      if (rc != 0 && (errno == EINVAL || errno == kKernelENOTSUPP || errno == EOPNOTSUPP)) {
        lookup_and_delete = false;  // older kernels: lookup, then delete
      }
    }
    if (!clear || !lookup_and_delete) {
      rc = bpf_lookup_elem(map_fd, k, value.data());
      if (rc == 0 && clear) bpf_delete_elem(map_fd, k);
    }
    if (rc != 0) {
      if (errno == ENOENT) continue;  // the program deleted it meanwhile
      return fail("read");
    }
    snapshot.keys.insert(snapshot.keys.end(), k, k + key_size);
    snapshot.values.insert(snapshot.values.end(), value.begin(), value.end());
    ++snapshot.entries;
  }
  return snapshot;
}

// The kernel copies a per-CPU value for every possible CPU
// (for_each_possible_cpu in bpf_percpu_array_copy), so a read needs room for
// as many as /sys/devices/system/cpu/possible lists, in any of its forms
// ("0-3", "0,2-3", "0,1"): libbpf's parser, which counts the ranges' CPUs.
size_t possible_cpu_count() {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus > 0) return static_cast<size_t>(cpus);
  // Without the file there is no per-CPU value to size: the kernel's own
  // count is then at least the configured processors.
  const long configured = sysconf(_SC_NPROCESSORS_CONF);
  return configured > 0 ? static_cast<size_t>(configured) : 1;
}

size_t tracepoint_struct_lines(const std::string& category, const std::string& event) {
  std::ifstream format(ebpf::tracepoint_format_file(category, event));
  if (!format) return 0;
  std::string text;
  {
    // Array sizes named by an enum are looked up in the kernel's BTF, which
    // libbpf may complain about on stderr; the diagnostics being mapped are
    // what the user needs to see.
    StderrCapture capture;
    text = ebpf::parse_tracepoint(format, category, event);
    capture.finish();
  }
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

std::vector<int> online_cpus() {
  std::vector<int> cpus;
  std::ifstream file("/sys/devices/system/cpu/online");
  std::string text;
  std::getline(file, text);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const size_t dash = item.find('-');
    const int first = std::atoi(item.c_str());
    const int last = dash == std::string::npos ? first : std::atoi(item.c_str() + dash + 1);
    for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (cpus.empty()) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (int cpu = 0; cpu < n; ++cpu) cpus.push_back(cpu);
  }
  return cpus;
}

}  // namespace tcptrace::bcc
