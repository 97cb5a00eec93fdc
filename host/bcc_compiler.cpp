// The compiler module (bcc_compiler.h): BCC's BPFModule, the one place that
// includes libbcc's compiler headers. Built as tcptrace-bcc-compiler.so and
// loaded by the host only when a program must be compiled.
#include "bcc_compiler.h"

#include <bcc/bcc_common.h>
#include <bcc/bpf_module.h>
#include <bcc/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "compiled_object.h"
#include "kallsyms_view.h"
#include "stdio_capture.h"

// libbcc's own (common.cc): where a tracepoint's format file is, and the
// struct tp_frontend_action.cc inserts above each probe that takes a
// `struct tracepoint__CATEGORY__EVENT *`, made from that file. libbcc
// exports both but installs no header declaring them.
namespace ebpf {
std::string tracepoint_format_file(std::string const& category, std::string const& event);
std::string parse_tracepoint(std::istream& input, std::string const& category, std::string const& event);
}  // namespace ebpf

namespace tcptrace::bcc {
namespace {

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


// Tables BCC shares with other modules or pins to bpffs are opened, not
// created, by BPFModule (bpf_module.cc: is_extern, pinned tables); an object
// that recreated them would lose what they share, so such programs are not
// exported. These are helpers.h's macros for them.
const char* const kSharedTableMarkers[] = {"BPF_TABLE_PINNED", "BPF_TABLE_SHARED", "BPF_TABLE_PUBLIC",
                                           "\"extern\"", "\"export\"", "maps/extern", "maps/export",
                                           "maps/shared", "maps/pinned"};

class ModuleProgram final : public Program {
 public:
  ModuleProgram(ebpf::BPFModule* module, bool shares_tables) : module_(module), shares_tables_(shares_tables) {}
  ~ModuleProgram() override { delete module_; }
  ModuleProgram(const ModuleProgram&) = delete;
  ModuleProgram& operator=(const ModuleProgram&) = delete;

  std::vector<std::string> functions() const override {
    std::vector<std::string> names;
    const size_t n = bpf_num_functions(module_);
    for (size_t i = 0; i < n; ++i) names.emplace_back(bpf_function_name(module_, i));
    return names;
  }

  std::vector<OutputTable> output_tables() const override {
    std::vector<OutputTable> tables;
    const size_t n = bpf_num_tables(module_);
    for (size_t i = 0; i < n; ++i) {
      const int type = bpf_table_type_id(module_, i);
      if (!is_output_map(type)) continue;
      OutputTable table;
      table.name = bpf_table_name(module_, i);
      table.kind = type == BPF_MAP_TYPE_RINGBUF ? OutputKind::ring_buffer : OutputKind::perf_buffer;
      table.map_fd = bpf_table_fd_id(module_, i);
      table.field_descriptions = field_descriptions(table.name);
      tables.push_back(std::move(table));
    }
    return tables;
  }

  std::vector<DataTable> data_tables() const override {
    std::vector<DataTable> tables;
    const size_t n = bpf_num_tables(module_);
    for (size_t i = 0; i < n; ++i) {
      const int type = bpf_table_type_id(module_, i);
      if (is_output_map(type)) continue;
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

  int table_fd(const std::string& name) const override { return bpf_table_fd(module_, name.c_str()); }

  std::optional<std::string> table_value_description(const std::string& name) const override {
    if (!has_table(name)) return std::nullopt;
    const char* description = bpf_table_leaf_desc(module_, name.c_str());
    if (description == nullptr) return std::nullopt;
    return std::string(description);
  }

  Result<LoadedFunction> load(const ProbeSpec& probe, std::string& bcc_output) const override {
    const auto* insns = static_cast<const bpf_insn*>(bpf_function_start(module_, probe.function.c_str()));
    const size_t size = bpf_function_size(module_, probe.function.c_str());
    if (insns == nullptr || size == 0) {
      return runtime_error("the program has no function '" + probe.function + "'");
    }
    // The module's BTF line info makes the log on failure show the source
    // lines, in terms of BCC's /virtual/main.c.
    return load_through_verifier(probe, bcc_output, [&](char* log, unsigned log_size) {
      return bcc_func_load(module_, program_type_for(probe.kind), probe.function.c_str(), insns,
                           static_cast<int>(size), bpf_module_license(module_), bpf_module_kern_version(module_), 0,
                           log, log_size, nullptr, -1);
    });
  }

  Result<CompiledObject> export_object() const override {
    if (shares_tables_) return runtime_error("the program shares or pins a table, which a cached object cannot");
    CompiledObject object;
    object.license = bpf_module_license(module_);
    object.kern_version = bpf_module_kern_version(module_);
    std::map<int, uint32_t> map_of_fd;
    const size_t tables = bpf_num_tables(module_);
    for (size_t i = 0; i < tables; ++i) {
      ObjectMap map;
      map.name = bpf_table_name(module_, i);
      map.type = static_cast<uint32_t>(bpf_table_type_id(module_, i));
      if (map.type == BPF_MAP_TYPE_ARRAY_OF_MAPS || map.type == BPF_MAP_TYPE_HASH_OF_MAPS) {
        return runtime_error("map '" + map.name + "' holds maps, which a cached object cannot recreate");
      }
      map.key_size = static_cast<uint32_t>(bpf_table_key_size_id(module_, i));
      map.value_size = static_cast<uint32_t>(bpf_table_leaf_size_id(module_, i));
      map.max_entries = static_cast<uint32_t>(bpf_table_max_entries_id(module_, i));
      map.flags = static_cast<uint32_t>(bpf_table_flags_id(module_, i));
      if (const char* key = bpf_table_key_desc_id(module_, i)) map.key_description = key;
      if (const char* value = bpf_table_leaf_desc_id(module_, i)) map.value_description = value;
      if (is_output_map(static_cast<int>(map.type))) map.field_descriptions = field_descriptions(map.name);
      map_of_fd[bpf_table_fd_id(module_, i)] = static_cast<uint32_t>(object.maps.size());
      object.maps.push_back(std::move(map));
    }
    const size_t functions = bpf_num_functions(module_);
    for (size_t f = 0; f < functions; ++f) {
      ObjectFunction function;
      function.name = bpf_function_name(module_, f);
      const auto* insns = static_cast<const bpf_insn*>(bpf_function_start(module_, function.name.c_str()));
      const size_t count = bpf_function_size(module_, function.name.c_str()) / sizeof(bpf_insn);
      function.instructions.resize(count);
      std::memcpy(static_cast<void*>(function.instructions.data()), insns, count * sizeof(bpf_insn));
      // BPFModule::load_maps has put each map's fd into the ld_imm64 that
      // loads it (src_reg BPF_PSEUDO_MAP_FD); the object records which map
      // each one is, so another process can put its own fds there.
      for (size_t i = 0; i < count; ++i) {
        if (insns[i].code != (BPF_LD | BPF_DW | BPF_IMM)) continue;
        const std::string where = function.name + " instruction " + std::to_string(i);
        if (i + 1 >= count) return runtime_error(where + ": a 64-bit load without its second half");
        if (insns[i].src_reg == BPF_PSEUDO_MAP_FD) {
          const auto found = map_of_fd.find(insns[i].imm);
          if (found == map_of_fd.end()) return runtime_error(where + " loads a map the module did not declare");
          function.map_references.push_back({static_cast<uint32_t>(i), found->second});
        } else if (insns[i].src_reg != 0 && insns[i].src_reg != BPF_PSEUDO_FUNC) {
          return runtime_error(where + ": a 64-bit load of kind " + std::to_string(insns[i].src_reg) +
                               " (global data or a kernel symbol), which a cached object cannot relocate");
        }
        ++i;  // the second half of the ld_imm64
      }
      object.functions.push_back(std::move(function));
    }
    return object;
  }

 private:
  static bool is_output_map(int type) {
    return type == BPF_MAP_TYPE_PERF_EVENT_ARRAY || type == BPF_MAP_TYPE_RINGBUF;
  }

  // The layout BCC recorded for what the program submits to an output
  // table (empty when it submits nothing).
  std::vector<std::string> field_descriptions(const std::string& table) const {
    std::vector<std::string> fields;
    const size_t n = bpf_perf_event_fields(module_, table.c_str());
    for (size_t f = 0; f < n; ++f) fields.emplace_back(bpf_perf_event_field(module_, table.c_str(), f));
    return fields;
  }

  ebpf::BPFModule* module_;
  bool shares_tables_;
};

Result<std::unique_ptr<Program>> compile(const CompileRequest& request, std::string& diagnostics) {
  std::vector<const char*> flags;
  flags.reserve(request.cflags.size());
  for (const auto& flag : request.cflags) flags.push_back(flag.c_str());
  ebpf::BPFModule* module = nullptr;
  {
    ScopedEnv kernel_source("BCC_KERNEL_SOURCE", request.kernel_source_dir);
    StderrCapture capture;
    {
      StdoutToStderr guard;
      CompilerCodeTrimmer trimmer;
      run_with_kallsyms_view(request.kallsyms_text, [&] {
        // Not bpf_module_create_c_from_string(): BCC's C API always enables
        // the "rw engine", which JIT-compiles x86 code to print and parse
        // every table's keys and values (bpf_module.cc annotate()) and keeps
        // LLVM's context alive for it. The host never uses those functions;
        // without them BCC also frees its LLVM state right after code
        // generation (BPFModule::finalize).
        auto* compiled = new ebpf::BPFModule(0, nullptr, /*rw_engine_enabled=*/false, "", /*allow_rlimit=*/true,
                                             nullptr);
        if (compiled->load_string(request.source, flags.data(), static_cast<int>(flags.size())) != 0) {
          delete compiled;
          compiled = nullptr;
        }
        module = compiled;
      });
    }
    diagnostics = capture.finish();
  }
  if (module == nullptr) return runtime_error("the BPF program did not compile");
  bool shares_tables = false;
  for (const char* marker : kSharedTableMarkers) shares_tables |= request.source.find(marker) != std::string::npos;
  return std::unique_ptr<Program>(new ModuleProgram(module, shares_tables));
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

void release_memory() {
  // Not bcc_free_memory(): it drops the text of whichever libbcc copy the
  // symbol resolves to, and with libbcc_bpf in the process that is the copy
  // the host is running (a crash, not a saving). The compiler's code, which a running tracer never calls again; a later
  // compile (--watch) faults it back in.
  drop_pages(compiler_code_ranges());
}

const CompilerEntryPoints kEntryPoints{kCompilerInterfaceVersion, &compile, &tracepoint_struct_lines,
                                       &release_memory};

}  // namespace
}  // namespace tcptrace::bcc

extern "C" __attribute__((visibility("default"))) const tcptrace::bcc::CompilerEntryPoints*
tcptrace_bcc_compiler_entry_points() {
  return &tcptrace::bcc::kEntryPoints;
}
