#include "bcc_backend.h"

#include <bcc/libbpf.h>
#include <bcc/perf_reader.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "bcc_compiler.h"
#include "kallsyms_view.h"
#include "kernel_probe.h"
#include "stdio_capture.h"
#include "system_checks.h"

// libbpf's, which libbcc_bpf links; its header clashes with BCC's own copy
// of the libbpf declarations, so it is declared here.
extern "C" int libbpf_num_possible_cpus(void);

namespace tcptrace::bcc {

size_t possible_cpu_count();

namespace {



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

// ---- the compiler module ---------------------------------------------------

namespace {

// Where the compiler module is: beside the binary in a build tree, or in
// the package's private library directory (<prefix>/<libdir>/tcptrace-bcc)
// for an installed binary in <prefix>/sbin. Only these absolute paths are
// tried, never the loader's search path: the module runs as root.
std::vector<std::string> compiler_module_candidates() {
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return {};
  exe[n] = '\0';
  std::string dir(exe);
  dir.erase(dir.rfind('/'));
  const std::string name = "tcptrace-bcc-compiler.so";
  return {dir + "/../" TCPTRACE_INSTALL_LIBDIR "/tcptrace-bcc/" + name, dir + "/" + name};
}

Result<const CompilerEntryPoints*> load_compiler_module() {
  std::string tried;
  for (const std::string& path : compiler_module_candidates()) {
    if (::access(path.c_str(), F_OK) != 0) {
      tried += (tried.empty() ? "" : ", ") + path;
      continue;
    }
    // Its dependencies (libbcc, LLVM) load with it.
    // RTLD_LOCAL: the module's copies of the host's own code stay its own
    // (it links them with --exclude-libs), and nothing else binds to LLVM.
    void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) return runtime_error("cannot load the compiler module: " + std::string(::dlerror()));
    using Entry = const CompilerEntryPoints* (*)();
    auto entry = reinterpret_cast<Entry>(::dlsym(handle, "tcptrace_bcc_compiler_entry_points"));
    if (entry == nullptr || entry()->interface_version != kCompilerInterfaceVersion) {
      return runtime_error("the compiler module " + path + " is not from this build of tcptrace-bcc");
    }
    // Never unloaded: LLVM's static state does not survive dlclose.
    return entry();
  }
  return runtime_error("cannot find the compiler module (tried " + tried + ")");
}

std::atomic<bool> compiler_module_loaded{false};

// Loaded on first use, once per process.
Result<const CompilerEntryPoints*> compiler_entry_points() {
  static const Result<const CompilerEntryPoints*> entry = [] {
    auto loaded = load_compiler_module();
    compiler_module_loaded = loaded.ok();
    return loaded;
  }();
  return entry;
}

}  // namespace

bool compiler_loaded() { return compiler_module_loaded; }

std::optional<std::string> compiler_module_path() {
  for (const std::string& path : compiler_module_candidates()) {
    if (::access(path.c_str(), F_OK) == 0) return path;
  }
  return std::nullopt;
}

Result<std::unique_ptr<Program>> compile_program(const std::string& source, const std::vector<std::string>& cflags,
                                                 const std::optional<std::string>& kernel_source_dir,
                                                 std::string& diagnostics) {
  auto compiler = compiler_entry_points();
  if (!compiler) return std::move(compiler).take_error();
  // The helper probe loads two tiny programs once; every compile after
  // that reuses the answer (the kernel does not change under us).
  static const std::string kallsyms_text = kallsyms_view_text(probe_read_helpers());
  return (*compiler)->compile(CompileRequest{source, cflags, kernel_source_dir, kallsyms_text}, diagnostics);
}

void release_compiler_memory() {
  if (compiler_loaded()) compiler_entry_points().value()->release_memory();
}


// ---- programs from compiled objects ----------------------------------------

namespace {

bool is_output_map(uint32_t type) { return type == BPF_MAP_TYPE_PERF_EVENT_ARRAY || type == BPF_MAP_TYPE_RINGBUF; }

class ObjectProgram final : public Program {
 public:
  ObjectProgram(CompiledObject object, std::vector<UniqueFd> map_fds)
      : object_(std::move(object)), map_fds_(std::move(map_fds)) {}

  std::vector<std::string> functions() const override {
    std::vector<std::string> names;
    for (const ObjectFunction& function : object_.functions) names.push_back(function.name);
    return names;
  }

  std::vector<OutputTable> output_tables() const override {
    std::vector<OutputTable> tables;
    for (size_t i = 0; i < object_.maps.size(); ++i) {
      const ObjectMap& map = object_.maps[i];
      if (!is_output_map(map.type)) continue;
      tables.push_back({map.name, map.type == BPF_MAP_TYPE_RINGBUF ? OutputKind::ring_buffer : OutputKind::perf_buffer,
                        map.field_descriptions, map_fds_[i].get()});
    }
    return tables;
  }

  std::vector<DataTable> data_tables() const override {
    std::vector<DataTable> tables;
    for (size_t i = 0; i < object_.maps.size(); ++i) {
      const ObjectMap& map = object_.maps[i];
      if (is_output_map(map.type)) continue;
      tables.push_back({map.name, static_cast<int>(map.type), map.key_description, map.value_description,
                        map.key_size, map.value_size, map.max_entries, map_fds_[i].get()});
    }
    return tables;
  }

  int table_fd(const std::string& name) const override {
    for (size_t i = 0; i < object_.maps.size(); ++i) {
      if (object_.maps[i].name == name) return map_fds_[i].get();
    }
    return -1;
  }

  std::optional<std::string> table_value_description(const std::string& name) const override {
    for (const ObjectMap& map : object_.maps) {
      if (map.name == name) return map.value_description;
    }
    return std::nullopt;
  }

  Result<LoadedFunction> load(const ProbeSpec& probe, std::string& bcc_output) const override {
    const ObjectFunction* function = nullptr;
    for (const ObjectFunction& f : object_.functions) {
      if (f.name == probe.function) function = &f;
    }
    if (function == nullptr || function->instructions.empty()) {
      return runtime_error("the program has no function '" + probe.function + "'");
    }
    std::vector<bpf_insn> insns(function->instructions.size());
    static_assert(sizeof(bpf_insn) == sizeof(BpfInstruction));
    std::memcpy(insns.data(), function->instructions.data(), insns.size() * sizeof(bpf_insn));
    for (const MapReference& reference : function->map_references) {
      // parse_object() has checked that each reference is the first half of
      // an ld_imm64 and names one of the object's maps.
      insns[reference.instruction].src_reg = BPF_PSEUDO_MAP_FD;
      insns[reference.instruction].imm = map_fds_[reference.map].get();
      insns[reference.instruction + 1].imm = 0;
    }
    // bcc_prog_load derives what the kernel needs from the function's name
    // as BCC's own loads do (kfunc__/kretfunc__: the attach type and the
    // BTF id of the traced function).
    return load_through_verifier(probe, bcc_output, [&](char* log, unsigned log_size) {
      return bcc_prog_load(program_type_for(probe.kind), function->name.c_str(), insns.data(),
                           static_cast<int>(insns.size() * sizeof(bpf_insn)), object_.license.c_str(),
                           object_.kern_version, 0, log, log_size);
    });
  }

  Result<CompiledObject> export_object() const override { return object_; }

 private:
  CompiledObject object_;
  std::vector<UniqueFd> map_fds_;  // one per object_.maps entry
};

}  // namespace

Result<std::unique_ptr<Program>> program_from_object(CompiledObject object) {
  std::vector<UniqueFd> fds;
  for (const ObjectMap& map : object.maps) {
    errno = 0;
    UniqueFd fd(bcc_create_map(static_cast<bpf_map_type>(map.type), map.name.c_str(), static_cast<int>(map.key_size),
                               static_cast<int>(map.value_size), static_cast<int>(map.max_entries),
                               static_cast<int>(map.flags)));
    if (!fd.valid()) return runtime_error("cannot create map '" + map.name + "': " + errno_text(errno));
    fds.push_back(std::move(fd));
  }
  return std::unique_ptr<Program>(new ObjectProgram(std::move(object), std::move(fds)));
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
  auto compiler = compiler_entry_points();
  return compiler ? (*compiler)->tracepoint_struct_lines(category, event) : 0;
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
