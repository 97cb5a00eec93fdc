// The host's one interface to libbcc. Everything BCC-specific (its module
// handle, its C callbacks, its status conventions, the kernel's BPF syscalls
// it wraps) stays behind this header, which includes no BCC header itself.
// Compiling runs in the compiler module (bcc_compiler.h, libbcc); the rest
// (loading, attaching, buffers, map reads) needs only libbcc_bpf, which does
// not link LLVM.
//
// Ownership: Program owns its maps (and, when compiled, BCC's module); LoadedFunction
// owns a verified program fd; Attachment owns one attachment and detaches in
// its destructor; OutputReader owns the per-CPU perf buffers or ring buffers.
// Destroying them in reverse order of creation (which scopes do by
// themselves) detaches everything.
#pragma once

#include <linux/bpf.h>  // the kernel's map type numbers (UAPI), not BCC's

#include <cerrno>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "compiled_object.h"
#include "probe_spec.h"
#include "result.h"
#include "stdio_capture.h"
#include "unique_fd.h"

namespace tcptrace::bcc {

enum class OutputKind { perf_buffer, ring_buffer };

struct OutputTable {
  std::string name;
  OutputKind kind = OutputKind::perf_buffer;
  std::vector<std::string> field_descriptions;  // "name#type", see event_layout.h
  int map_fd = -1;
};

// A map that is not an output buffer (hash, array, their per-CPU and LRU
// forms, and any other kind), as BCC declared it: the program's own
// aggregation tables (table_reader.h decides which of them it reads).
struct DataTable {
  std::string name;
  int map_type = 0;              // BPF_MAP_TYPE_*
  std::string key_description;   // BCC's JSON: "\"int\"" or ["key_t", [[...]], "struct_packed"]
  std::string value_description;
  size_t key_size = 0;
  size_t value_size = 0;
  size_t max_entries = 0;
  int map_fd = -1;
};

// How the host reads a data table: its map type, as a kind.
enum class DataMapKind { hash, array, percpu_hash, percpu_array, other };
inline DataMapKind data_map_kind(int map_type) {
  switch (map_type) {
    case BPF_MAP_TYPE_HASH:
    case BPF_MAP_TYPE_LRU_HASH: return DataMapKind::hash;
    case BPF_MAP_TYPE_ARRAY: return DataMapKind::array;
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH: return DataMapKind::percpu_hash;
    case BPF_MAP_TYPE_PERCPU_ARRAY: return DataMapKind::percpu_array;
    default: return DataMapKind::other;
  }
}

class LoadedFunction;

// A compiled program: its maps (created, with fds) and its functions, ready
// to load through the verifier. Made by the compiler module (bcc_compiler.h)
// from C text, or by program_from_object() from a cached object.
class Program {
 public:
  virtual ~Program() = default;

  virtual std::vector<std::string> functions() const = 0;
  // Every perf-event-array and ring-buffer map, with the layout BCC recorded
  // for what the program submits to it (empty when it submits nothing).
  virtual std::vector<OutputTable> output_tables() const = 0;
  // Every other map, with BCC's descriptions of its key and value types.
  virtual std::vector<DataTable> data_tables() const = 0;
  // -1 when the program has no such map.
  virtual int table_fd(const std::string& name) const = 0;
  bool has_table(const std::string& name) const { return table_fd(name) >= 0; }
  // BCC's JSON description of a map's value type (nested structs, padding).
  virtual std::optional<std::string> table_value_description(const std::string& name) const = 0;

  // Loads one function through the verifier as the program type its probe
  // kind needs. On failure the error carries the verifier's last log lines.
  // What BCC printed meanwhile (on failure: the whole verifier log, for a
  // compiled program with its source lines as "; TEXT @ main.c:N", and
  // hints) lands in `bcc_output`.
  virtual Result<LoadedFunction> load(const ProbeSpec& probe, std::string& bcc_output) const = 0;

  // What a later start needs to load this program without compiling it; an
  // error saying why when the program cannot be expressed that way.
  virtual Result<CompiledObject> export_object() const = 0;
};

// Compiles C text with BCC's clang, through the compiler module, which the
// first call loads. `kernel_source_dir` (a merged header tree) is handed to
// BCC as BCC_KERNEL_SOURCE; without it BCC finds the running kernel's
// headers itself. Whatever clang and BCC printed (errors and warnings, with
// the program as /virtual/main.c) lands in `diagnostics`, on success and on
// failure.
Result<std::unique_ptr<Program>> compile_program(const std::string& source, const std::vector<std::string>& cflags,
                                                 const std::optional<std::string>& kernel_source_dir,
                                                 std::string& diagnostics);

// Creates the maps of a compiled object; its functions load with those
// maps' fds put where the object says. The verifier checks them as it
// checks any program.
Result<std::unique_ptr<Program>> program_from_object(CompiledObject object);

// Where the compiler module is, without loading it; nullopt if it is missing.
std::optional<std::string> compiler_module_path();

// Whether this process has loaded the compiler module (and with it LLVM).
bool compiler_loaded();

// Returns LLVM/clang memory to the system once everything is loaded; nothing
// when the compiler module was never loaded.
void release_compiler_memory();

// The program type a probe kind loads as.
inline bpf_prog_type program_type_for(ProbeKind kind) {
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

class LoadedFunction {
 public:
  LoadedFunction(ProbeSpec probe, UniqueFd fd) : probe_(std::move(probe)), fd_(std::move(fd)) {}
  const ProbeSpec& probe() const { return probe_; }
  int fd() const { return fd_.get(); }
  // Runs the kernel skipped because the program would have nested inside
  // itself on one CPU (bpf_prog_info.recursion_misses, Linux 5.12+): each
  // one is an event lost before it reached any buffer. nullopt when the
  // kernel does not report it.
  std::optional<uint64_t> recursion_misses() const;

 private:
  ProbeSpec probe_;
  UniqueFd fd_;
};

// Loads one function through the verifier with `loader`, a libbcc load call
// given a log buffer (filled only on failure: logging a successful load
// costs time) and returning the program fd or -1 with errno. libbcc prints
// the log on failure itself (libbpf.c: bpf_print_hints); that and whatever
// else it printed lands in `bcc_output`.
template <class Loader>
Result<LoadedFunction> load_through_verifier(const ProbeSpec& probe, std::string& bcc_output, Loader&& loader) {
  static constexpr size_t kLogSize = 1 << 20;
  std::vector<char> log(kLogSize, '\0');
  int fd = -1;
  int err = 0;
  {
    StderrCapture capture;
    errno = 0;
    fd = loader(log.data(), static_cast<unsigned>(log.size()));
    err = errno;
    bcc_output = capture.finish();
  }
  if (fd < 0) return verifier_refusal(probe, err, log.data());
  return LoadedFunction(probe, UniqueFd(fd));
}

// One attached probe. Created attached; detaches when destroyed.
class Attachment {
 public:
  static Result<std::unique_ptr<Attachment>> attach(const LoadedFunction& function);
  virtual ~Attachment() = default;
  Attachment(const Attachment&) = delete;
  Attachment& operator=(const Attachment&) = delete;
  const ProbeSpec& probe() const { return probe_; }

 protected:
  explicit Attachment(ProbeSpec probe) : probe_(std::move(probe)) {}

 private:
  ProbeSpec probe_;
};

// Receives what the buffers deliver. Called on the polling thread only.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void on_event(size_t table_index, const void* data, size_t size) = 0;
  virtual void on_lost(size_t table_index, int cpu, uint64_t count) = 0;
};

class OutputReader {
 public:
  // Opens a perf buffer per online CPU for every perf table (`pages_per_cpu`
  // pages each, a power of two) and a ring buffer consumer for every ring
  // buffer table. Events go to `sink` with the index of their table.
  static Result<std::unique_ptr<OutputReader>> open(const std::vector<OutputTable>& tables,
                                                    EventSink& sink, int pages_per_cpu);
  virtual ~OutputReader() = default;
  // Waits up to timeout_ms for data, then delivers everything available.
  // Returns false on a polling error other than EINTR.
  virtual bool poll(int timeout_ms) = 0;
  // Delivers whatever is buffered without waiting (used when stopping).
  virtual void drain() = 0;
};

// How many lines BCC inserts into the program's text above a
// TRACEPOINT_PROBE(category, event): the struct describing the tracepoint's
// record (tp_frontend_action.cc), one line per field and per padding byte of
// the kernel's format file. 0 when the kernel has no such tracepoint, as
// BCC then inserts nothing. Loads the compiler module (which parses the
// format as BCC does); needed only to map a failed compile's diagnostics.
size_t tracepoint_struct_lines(const std::string& category, const std::string& event);

// The online CPUs (/sys/devices/system/cpu/online).
std::vector<int> online_cpus();

// Entry 0 of a per-CPU array of u64, one value per possible CPU.
std::vector<uint64_t> read_percpu_u64(int map_fd);

// Checks that a map is a per-CPU array of `entries` values of `words` u64
// each; a runtime error naming `name` and what it is instead otherwise.
Status check_percpu_array(int map_fd, const std::string& name, size_t entries, size_t words);

// Checks that a map is a hash or LRU hash map with keys and values of these
// sizes and returns its capacity (max_entries); a runtime error naming
// `name` and what it is instead otherwise.
Result<uint32_t> check_hash_map(int map_fd, const std::string& name, size_t key_size, size_t value_size);

// Adds an entry unless the key is there already (BPF_NOEXIST); 0, EEXIST,
// or the errno of the failure (E2BIG: a full hash map).
int insert_map_element(int map_fd, const void* key, const void* value);

// Every entry of such a map, each of its u64 words summed over the possible
// CPUs, flat: entry * words + word. Empty if a lookup fails.
std::vector<uint64_t> read_percpu_array_sums(int map_fd, size_t entries, size_t words);

// One read of a hash or array map: every entry's key and value bytes, flat
// (entry i at i * key_size and i * value_stride). A per-CPU map's value is
// every possible CPU's value one after the other, each padded to 8 bytes, so
// value_stride is cpus * round_up(value_size, 8); `cpus` says how many.
struct MapSnapshot {
  size_t entries = 0;
  size_t key_size = 0;
  size_t value_stride = 0;
  size_t cpus = 1;
  std::vector<unsigned char> keys;
  std::vector<unsigned char> values;
};

// Reads every entry of a hash or array map (kind as data_map_kind says).
// With `clear`, what was read is also taken out of the map, so the next read
// sees only what came after: hash entries are removed with the lookup
// (BPF_MAP_LOOKUP_AND_DELETE_ELEM, Linux 5.14+; before that a lookup then a
// delete), array entries are overwritten with zeros after their lookup (an
// array cannot lose entries; an increment between the two is lost, as it is
// for bcc's table.clear()).
Result<MapSnapshot> read_map(int map_fd, DataMapKind kind, size_t key_size, size_t value_size, size_t max_entries,
                             bool clear);

}  // namespace tcptrace::bcc
