#include "program_loader.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <cstdio>
#include <cstring>
#include <functional>
#include <malloc.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "compile_cache.h"
#include "compile_inputs.h"
#include "diagnostics.h"
#include "diagnostics_map.h"
#include "filter_macros.h"
#include "kernel_probe.h"
#include "owner_seed.h"
#include "socket_table.h"
#include "stdio_capture.h"

namespace tcptrace {
namespace {

std::string cflag_for(const UserMacro& macro) {
  return "-D" + macro.name + (macro.value ? "=" + *macro.value : "");
}

// clang names the program "/virtual/main.c"; anything else it complains
// about is a header. BCC's own loader messages start with "bpf: ".
bool blames_the_program(const std::string& diagnostics) {
  return diagnostics.find("/virtual/main.c:") != std::string::npos ||
         diagnostics.find("bpf: ") != std::string::npos;
}

// Returns what it printed.
std::string print_diagnostics(const std::string& diagnostics, const ProgramSource& source) {
  std::vector<InsertedLines> inserted;
  for (const TracepointProbeLine& probe : tracepoint_probe_lines(source.text)) {
    inserted.push_back({probe.line, bcc::tracepoint_struct_lines(probe.category, probe.event)});
  }
  const std::string mapped = map_diagnostics_to_source(diagnostics, source.text, source.path, inserted);
  write_all(STDERR_FILENO, mapped);
  return mapped;
}

// Loads one probe's function; when the kernel refuses it, BCC's copy of the
// verifier's log is printed pointing at the user's lines, and the error
// names the line the verifier stopped at.
Result<bcc::LoadedFunction> load_function(const bcc::Program& program, const ProbeSpec& probe,
                                          const ProgramSource& source) {
  std::string bcc_output;
  auto function = program.load(probe, bcc_output);
  if (function) {
    write_all(STDERR_FILENO, bcc_output);
    return function;
  }
  const MappedVerifierLog log = map_verifier_log_to_source(bcc_output, source.text, source.path);
  write_all(STDERR_FILENO, log.text);
  Error error = std::move(function).take_error();
  if (log.failure_line) error.message = source.path + ":" + std::to_string(*log.failure_line) + ": " + error.message;
  return error;
}

// Errors of several lines (one per mistake in a program's declarations):
// each but the last is reported here, the last travels up as the error.
Error report_all_but_last(Error error) {
  const size_t last = error.message.rfind('\n');
  if (last == std::string::npos) return error;
  size_t start = 0;
  while (start < last) {
    const size_t end = error.message.find('\n', start);
    report(std::string_view(error.message).substr(start, end - start));
    start = end + 1;
  }
  error.message = error.message.substr(last + 1);
  return error;
}

struct Compiled {
  std::unique_ptr<bcc::Program> program;
  std::optional<MergedHeaderTree> headers;
  // The files clang read (its dependency file), resolved to the real files
  // while the merged tree still exists; nullopt when they could not all be
  // named, and then the result is not cached.
  std::optional<std::vector<std::string>> dependencies;
  std::string warnings;  // what print_diagnostics() printed about the program
};

// The real file behind a name in clang's dependency file. Relative names
// are relative to the tree BCC compiled in: a merged tree holds the build
// tree's files over the source tree's (MergedHeaderTree), so the same order
// finds the file a link there points to; without a tree BCC used the
// running kernel's own, its build tree then the source tree of a split one.
std::optional<std::string> resolve_dependency(const std::string& name, const std::optional<HeaderTree>& tree,
                                              const std::string& running_release) {
  std::vector<std::string> candidates;
  if (name.front() == '/') {
    candidates.push_back(name);
  } else if (tree) {
    candidates.push_back(tree->build_dir + "/" + name);
    if (!tree->single_tree()) candidates.push_back(tree->source_dir + "/" + name);
  } else {
    candidates.push_back("/lib/modules/" + running_release + "/build/" + name);
    candidates.push_back("/lib/modules/" + running_release + "/source/" + name);
  }
  for (const std::string& candidate : candidates) {
    char real[PATH_MAX];
    if (::realpath(candidate.c_str(), real) != nullptr) return std::string(real);
  }
  return std::nullopt;
}

std::optional<std::vector<std::string>> dependencies_from(const std::string& dependency_file,
                                                          const std::optional<HeaderTree>& tree,
                                                          const std::string& running_release,
                                                          const std::string& unpacked_root) {
  const std::vector<std::string> names = parse_dependency_file(dependency_file);
  if (names.empty()) return std::nullopt;
  std::vector<std::string> files;
  for (const std::string& name : names) {
    // BCC's own headers (helpers.h, bpf.h) live in libbcc, whose identity
    // the entry keeps as a dependency of its own.
    if (name.rfind("/virtual/", 0) == 0) continue;
    auto real = resolve_dependency(name, tree, running_release);
    if (!real) return std::nullopt;
    // A kheaders tree is unpacked afresh by every run; the key holds the
    // archive's identity instead.
    if (!unpacked_root.empty() && real->rfind(unpacked_root + "/", 0) == 0) continue;
    if (std::find(files.begin(), files.end(), *real) == files.end()) files.push_back(std::move(real).value());
  }
  return files;
}

// clang's dependency file goes to an in-memory file (the compile runs in a
// thread with a mount namespace of its own, where /proc/self still works).
class DependencyFile {
 public:
  DependencyFile() : fd_(::memfd_create("tcptrace-dependencies", MFD_CLOEXEC)) {}
  bool valid() const { return fd_.valid(); }
  std::vector<std::string> cflags() const {
    return {"-MD", "-MF", "/proc/self/fd/" + std::to_string(fd_.get())};
  }
  std::string text() const { return read_from_start(fd_.get()); }

 private:
  UniqueFd fd_;
};

// Compiles against the chosen headers. When a fallback header tree fails
// inside the headers rather than in the program, the next installed tree is
// tried: a tree newer than what this libbcc's clang understands fails there
// (BCC 0.26 with Linux 6.12's: `struct bpf_wq` incomplete) while an older one
// works.
Result<Compiled> compile_with_headers(const std::string& text, const ProgramSource& source,
                                      const std::vector<std::string>& cflags, const HeaderChoice& choice,
                                      const std::string& running_release, bool quiet = false) {
  std::vector<std::optional<HeaderTree>> trees = {choice.tree};
  for (const auto& alternative : choice.alternatives) trees.emplace_back(alternative);
  for (size_t i = 0; i < trees.size(); ++i) {
    std::optional<MergedHeaderTree> merged;
    if (trees[i]) {
      auto created = MergedHeaderTree::create(*trees[i]);
      if (!created) return std::move(created).take_error();
      merged.emplace(std::move(created).value());
    }
    std::string diagnostics;
    const std::optional<std::string> tree = merged ? std::optional<std::string>(merged->path()) : std::nullopt;
    DependencyFile dependency_file;
    std::vector<std::string> flags = cflags;
    if (dependency_file.valid()) {
      for (std::string& flag : dependency_file.cflags()) flags.push_back(std::move(flag));
    }
    auto program = bcc::compile_program(text, flags, tree, diagnostics);
    if (program) {
      // Warnings about the program itself are worth showing; header noise is not.
      std::string warnings;
      if (blames_the_program(diagnostics)) warnings = print_diagnostics(diagnostics, source);
      std::string unpacked_root;
      if (choice.match == HeaderMatch::kheaders && trees[i]) {
        char real[PATH_MAX];
        if (::realpath(trees[i]->build_dir.c_str(), real) != nullptr) unpacked_root = real;
      }
      auto dependencies = dependency_file.valid()
                              ? dependencies_from(dependency_file.text(), trees[i], running_release, unpacked_root)
                              : std::nullopt;
      return Compiled{std::move(program).value(), std::move(merged), std::move(dependencies), std::move(warnings)};
    }
    const bool last = i + 1 == trees.size();
    if (blames_the_program(diagnostics) || last || choice.match != HeaderMatch::fallback) {
      if (!quiet) print_diagnostics(diagnostics, source);
      return runtime_error(source.path + " did not compile (diagnostics above)");
    }
    HeaderChoice next{HeaderMatch::fallback, trees[i + 1], {}};
    if (!quiet) report("kernel headers " + trees[i]->release + " do not compile with this BCC; " +
           describe_header_choice(next, running_release));
  }
  return runtime_error(source.path + " did not compile");
}

// The mistakes in a program's metric declarations, found by compiling the
// variant that sends its events (so BCC describes their layout) and binding
// the declarations to it; nullopt when that finds none or cannot compile.
std::optional<Error> declaration_mistakes(const BuildPlan& plan, const HeaderChoice& headers,
                                          const std::string& running_release) {
  const std::string text = replace_output_lines(plan.source.text, plan.declarations, OutputVariant::perf_buffer, 0);
  auto compiled = compile_with_headers(text, plan.source, plan.cflags, headers, running_release, /*quiet=*/true);
  if (!compiled) return std::nullopt;
  std::vector<std::string> names;
  std::vector<EventLayout> layouts;
  for (const auto& table : compiled->program->output_tables()) {
    if (table.field_descriptions.empty()) continue;
    auto layout = parse_event_layout(table.field_descriptions);
    if (!layout) return std::nullopt;  // a nested struct: the kernel variant's own errors say more
    names.push_back(table.name);
    layouts.push_back(std::move(layout).value());
  }
  std::vector<const EventLayout*> pointers;
  for (const EventLayout& layout : layouts) pointers.push_back(&layout);
  auto bound = bind_metric_fields(plan.declarations.metrics, names, pointers, plan.source.path);
  if (bound) return std::nullopt;
  return std::move(bound).take_error();
}

// Name of the hidden map that makes BCC describe one nested struct type.
std::string layout_table_name(size_t index) { return "tcptrace_layout_" + std::to_string(index); }

// Our own fd of a map of the compiled module, valid after the module is gone.
Result<UniqueFd> duplicate_map_fd(int fd, const std::string& name) {
  UniqueFd own(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!own.valid()) return runtime_error("cannot duplicate the fd of map '" + name + "': " + std::strerror(errno));
  return own;
}

// Our own fds of the arrays the generated counting code declared
// (kernel_counting.h), checked against the layout it was generated with.
Result<KernelCounts> take_kernel_counts(const bcc::Program& program, const BuildPlan& plan) {
  KernelCounts counts{{}, {}, KernelCountFeed(plan.declarations.metrics)};
  const auto take = [&](const std::string& name, size_t entries, size_t words) -> Result<UniqueFd> {
    if (!program.has_table(name)) return runtime_error(plan.source.path + ": no map '" + name + "' after compiling");
    auto own = duplicate_map_fd(program.table_fd(name), name);
    if (!own) return std::move(own).take_error();
    if (Status s = bcc::check_percpu_array(own->get(), name, entries, words); !s) {
      return runtime_error(plan.source.path + ": " + s.error().message);
    }
    return own;
  };
  for (size_t k = 0; k < plan.declarations.metrics.size(); ++k) {
    const MetricDeclaration& m = plan.declarations.metrics[k];
    auto fd = take(kernel_map_name(k), kernel_entries(m), kernel_words(m));
    if (!fd) return std::move(fd).take_error();
    counts.metric_maps.push_back(std::move(fd).value());
  }
  auto counted = take(kCountedMap, 1, 1);
  if (!counted) return std::move(counted).take_error();
  counts.counted = std::move(counted).value();
  return counts;
}

// The program's tables the host reads (table_reader.h), checked against
// its tcptrace:tables line, with our own fds of their maps.
Status take_data_tables(const bcc::Program& program, const std::vector<FormatHint>& hints, const WallClock& clock,
                        LoadedProgram& loaded) {
  const std::string& path = loaded.plan.source.path;
  const std::vector<bcc::DataTable> maps = program.data_tables();
  auto specs = select_tables(maps, loaded.plan.annotations);
  if (!specs) return runtime_error(path + ": " + specs.error().message);
  auto views = make_table_views(*specs, hints, clock);
  if (!views) return runtime_error(path + ": " + views.error().message);
  // The metrics the program declares on its tables (map=).
  std::vector<std::string> map_names;
  for (const bcc::DataTable& map : maps) map_names.push_back(map.name);
  if (Status s = bind_table_metrics(loaded.plan.declarations.map_metrics, map_names, *views,
                                    loaded.plan.opt_in_labels, path);
      !s) {
    return report_all_but_last(std::move(s).take_error());
  }
  for (const TableView& view : *views) {
    auto fd = duplicate_map_fd(program.table_fd(view.spec().name), view.spec().name);
    if (!fd) return std::move(fd).take_error();
    loaded.data_table_fds.push_back(std::move(fd).value());
  }
  loaded.data_tables = std::move(views).value();
  return {};
}

}  // namespace

KernelCountSnapshot read_kernel_counts(const KernelCounts& counts) {
  KernelCountSnapshot snapshot;
  const std::vector<MetricDeclaration>& metrics = counts.feed.metrics();
  for (size_t k = 0; k < counts.metric_maps.size() && k < metrics.size(); ++k) {
    snapshot.metrics.push_back(bcc::read_percpu_array_sums(counts.metric_maps[k].get(), kernel_entries(metrics[k]),
                                                           kernel_words(metrics[k])));
  }
  const std::vector<uint64_t> counted = bcc::read_percpu_array_sums(counts.counted.get(), 1, 1);
  snapshot.counted = counted.empty() ? 0 : counted.front();
  return snapshot;
}

Result<BuildPlan> plan_build(const Options& options, const ProgramLocations& where, ProgramSource source) {
  BuildPlan plan;
  plan.name = options.program ? *options.program : source.name;
  plan.source = std::move(source);
  auto hints = parse_format_hints(plan.source.text);
  if (!hints) return runtime_error(plan.source.path + ": " + hints.error().message);
  plan.hints = std::move(hints).value();
  auto annotations = parse_program_annotations(plan.source.text);
  if (!annotations) return runtime_error(plan.source.path + ": " + annotations.error().message);
  plan.annotations = std::move(annotations).value();
  auto declarations = parse_program_declarations(plan.source.text, plan.source.path, plan.hints);
  if (!declarations) return report_all_but_last(std::move(declarations).take_error());
  plan.declarations = std::move(declarations).value();
  plan.opt_in_labels = options.metrics_labels;
  for (const std::string& wanted : options.metrics_labels) {
    bool offered = false;
    for (const auto* list : {&plan.declarations.metrics, &plan.declarations.map_metrics}) {
      for (const MetricDeclaration& metric : *list) {
        for (const MetricLabel& label : metric.labels) offered |= label.opt_in && label.name == wanted;
      }
    }
    if (!offered) {
      return usage_error("--metrics-label " + wanted + ": program " + plan.name +
                         " declares no opt-in label of that name (a 'labels=..." + wanted + "?' in a tcptrace:metric line)");
    }
  }
  for (const std::string& filter : options.filters_given) {
    if (!plan.annotations.honours(filter)) {
      return usage_error("--" + std::string(filter == "family" ? "ipv4/--ipv6" : filter) + ": program " +
                         plan.name + " does not support this filter (it has no 'tcptrace:filters " + filter +
                         "' line)");
    }
  }

  const FilterPlan filters = build_filter_plan(options.filters);
  plan.cflags = {"-I" + where.include_dir};
  plan.cflags.insert(plan.cflags.end(), filters.cflags.begin(), filters.cflags.end());
  // The kernel's BTF, read once, for what the program reads from kernel
  // objects: socket namespaces (tcptrace:seed) and tcptrace:offsets.
  std::optional<Result<KernelBtf>> btf;
  if (!plan.annotations.seeds.empty() || !plan.annotations.offsets.empty()) btf.emplace(KernelBtf::load());
  if (!plan.annotations.seeds.empty()) {
    auto netns = *btf ? netns_offset_cflags(**btf) : Result<std::vector<std::string>>(Error(btf->error()));
    if (netns) {
      plan.cflags.insert(plan.cflags.end(), netns->begin(), netns->end());
      plan.seed_by_netns = true;
    } else {
      plan.seed_netns_missing = netns.error().message;
    }
  }
  if (!plan.annotations.offsets.empty()) {
    plan.offsets = resolve_offsets(plan.annotations.offsets, *btf ? &**btf : nullptr,
                                   *btf ? std::string() : btf->error().message);
    const std::vector<std::string> flags = offset_cflags(plan.offsets);
    plan.cflags.insert(plan.cflags.end(), flags.begin(), flags.end());
  }
  for (const auto& macro : options.macros) plan.cflags.push_back(cflag_for(macro));

  // Programs with variants get the method chosen from what the kernel can
  // do. --check and --print-source with an explicit method skip that test:
  // they compile (and verify) only, which works where attaching would not.
  if (!plan.annotations.attach_methods.empty()) {
    const bool attaches = !options.check && !options.print_source;
    const KernelCapabilities everything{{true, ""}, {true, ""}, {true, ""}};
    auto chosen = choose_attach_method(options.attach, plan.annotations.attach_methods,
                                       attaches || !options.attach ? probe_kernel_capabilities() : everything);
    if (!chosen) return std::move(chosen).take_error();
    plan.method = *chosen;
    plan.cflags.push_back("-D" + method_macro(*plan.method) + "=1");
  } else if (options.attach) {
    return usage_error("--attach: program " + plan.name + " has no attach variants (no 'tcptrace:attach' line)");
  }

  // Where --metrics counts: in the kernel when asked, or by default when
  // nothing needs the events in the host and the program can (measured
  // cheaper: docs/performance.md). options.cpp has refused the combinations
  // that cannot work with an explicit --aggregate kernel. Metrics read from
  // the program's tables (map=) are counted in the kernel anyway: a program
  // with only those sends its events nowhere when counting in the kernel.
  const bool kernel_capable = !plan.declarations.outputs.empty() &&
                              (!plan.declarations.metrics.empty() || !plan.declarations.map_metrics.empty());
  if (options.aggregate == Options::Aggregate::kernel) {
    if (!kernel_capable) {
      return usage_error("--aggregate kernel: program " + plan.name + " cannot count in the kernel (" +
                         (plan.declarations.metrics.empty() && plan.declarations.map_metrics.empty()
                              ? "it declares no tcptrace:metric"
                                                            : "it has no 'tcptrace:output' line") +
                         ")");
    }
    plan.aggregate_in_kernel = true;
  } else if (options.aggregate == Options::Aggregate::automatic) {
    plan.aggregate_in_kernel = kernel_capable && options.metrics && options.output == Options::Output::none &&
                               option_needing_events_in_host(options).empty();
  }
  if (plan.aggregate_in_kernel) {
    plan.text = replace_output_lines(plan.source.text, plan.declarations, OutputVariant::kernel_counts, 0);
    return plan;  // no output buffers to choose
  }

  // Output buffers: a ring buffer when the program can use one and the
  // kernel has them (auto), or as asked.
  size_t ring_pages = 0;
  if (plan.annotations.ring_buffer_capable || !plan.declarations.outputs.empty()) {
    const bool verify_only = options.check || options.print_source;
    if (options.buffer == Options::Buffer::ring && !verify_only) {
      const MethodSupport ring = probe_ring_buffer_support();
      if (!ring.available) return runtime_error("--buffer ringbuf: " + ring.reason);
      plan.ring_buffer = true;
    } else if (options.buffer == Options::Buffer::automatic) {
      plan.ring_buffer = probe_ring_buffer_support().available;
    } else {
      plan.ring_buffer = options.buffer == Options::Buffer::ring;
    }
    if (plan.ring_buffer) {
      // One buffer for all CPUs: as many pages as the per-CPU perf buffers
      // would have had together, rounded up to a power of two.
      size_t pages = 1;
      const size_t wanted = static_cast<size_t>(options.buffer_pages) * bcc::online_cpus().size();
      while (pages < wanted) pages <<= 1;
      ring_pages = pages;
      plan.cflags.push_back("-DTCPTRACE_RINGBUF=1");
      plan.cflags.push_back("-DTCPTRACE_RINGBUF_PAGES=" + std::to_string(pages));
    }
  } else if (options.buffer == Options::Buffer::ring) {
    return usage_error("--buffer ringbuf: program " + plan.name +
                       " has no ring buffer variant (no 'tcptrace:buffers ringbuf' or 'tcptrace:output' line)");
  }
  plan.text = replace_output_lines(plan.source.text, plan.declarations,
                                   plan.ring_buffer ? OutputVariant::ring_buffer : OutputVariant::perf_buffer,
                                   ring_pages);
  return plan;
}

std::string render_source_for_print(const BuildPlan& plan, const HeaderChoice& headers) {
  std::string text = "// tcptrace-bcc --print-source: " + plan.source.path + ", handed to BCC with:\n";
  for (const std::string& flag : plan.cflags) text += "//   " + flag + "\n";
  if (headers.match == HeaderMatch::kheaders && !headers.unpacked) {
    text += "//   kernel headers unpacked from " + headers.kheaders_archive +
            " into a private tmpfs (BCC_KERNEL_SOURCE)\n";
  } else if (headers.tree) {
    text += "//   kernel headers " + headers.tree->build_dir +
            (headers.tree->single_tree() ? "" : " + " + headers.tree->source_dir) + " (BCC_KERNEL_SOURCE)\n";
  }
  text += plan.text;
  if (!text.empty() && text.back() != '\n') text.push_back('\n');
  return text;
}

namespace {

std::string first_line_of(const std::string& path) {
  std::ifstream file(path);
  std::string line;
  std::getline(file, line);
  return line;
}

std::string identity_text(const FileIdentity& file) {
  return file.path + " " + std::to_string(file.inode) + " " + std::to_string(file.size) + " " +
         std::to_string(file.mtime_ns) + " " + std::to_string(file.ctime_ns);
}

// The compiler's shared libraries as this process mapped them for the
// compile (libbcc, libLLVM, libclang-cpp): an upgrade of any of them is a
// miss, though the key, computed without loading them, cannot see it.
std::vector<std::string> compiler_libraries() {
  std::vector<std::string> paths;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const size_t slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const bool compiler = path.find("/libbcc.so") != std::string::npos ||
                          path.find("/libLLVM") != std::string::npos || path.find("/libclang") != std::string::npos;
    if (compiler && std::find(paths.begin(), paths.end(), path) == paths.end()) paths.push_back(path);
  }
  return paths;
}

std::string compile_key(const BuildPlan& plan, const HeaderChoice& headers, const CacheUse& cache) {
  CompileInputs inputs;
  inputs.source_path = plan.source.path;
  inputs.text = plan.text;
  inputs.cflags = plan.cflags;
  inputs.tool_version = cache.tool_version;
  inputs.bcc_version = cache.bcc_version;
  if (auto module = bcc::compiler_module_path()) inputs.compiler_module = identity_text(identify_file(*module));
  utsname names{};
  if (::uname(&names) == 0) {
    inputs.kernel_release = names.release;
    inputs.kernel_build = names.version;
    inputs.machine = names.machine;
  }
  inputs.possible_cpus = first_line_of("/sys/devices/system/cpu/possible");
  inputs.headers = describe_header_trees(headers);
  inputs.tracepoint_formats = tracepoint_formats(plan.text, cache.tracepoint_format_root);
  return compile_cache_key(inputs);
}

// A cached object, its maps created and its functions through the
// verifier; nullopt (having said why on stderr if something was wrong)
// when the program must be compiled.
struct WarmStart {
  std::unique_ptr<bcc::Program> program;
  std::vector<bcc::LoadedFunction> functions;
};

std::optional<WarmStart> start_from_cache(const std::string& key, const std::string& path, CompileCache& cache,
                                          std::string& miss) {
  CacheLookup lookup = cache.find(key);
  if (lookup.outcome != CacheLookup::Outcome::hit) {
    miss = std::string(to_string(lookup.outcome)) + (lookup.reason.empty() ? "" : ": " + lookup.reason);
    if (lookup.outcome == CacheLookup::Outcome::unusable) report("cache: ignoring the entry of " + path + ": " + miss);
    return std::nullopt;
  }
  const std::string warnings = lookup.object->compiler_warnings;
  auto program = bcc::program_from_object(std::move(*lookup.object));
  if (!program) {
    report("cache: cannot recreate the maps of " + path + " (" + program.error().message + "); compiling it");
    miss = "maps not created";
    return std::nullopt;
  }
  WarmStart warm{std::move(program).value(), {}};
  for (const ProbeSpec& probe : attach_plan(warm.program->functions())) {
    std::string output;
    auto function = warm.program->load(probe, output);
    if (!function) {
      // An entry is stored only after its functions loaded; the same
      // kernel refusing them now leaves no use for it.
      report("cache: the kernel refused the cached " + path + " (" + function.error().message + "); compiling it");
      cache.remove(key);
      miss = "refused by the verifier";
      return std::nullopt;
    }
    warm.functions.push_back(std::move(function).value());
  }
  // Only now: a start that falls back to compiling prints the compile's own.
  write_all(STDERR_FILENO, warnings);
  return warm;
}

std::string milliseconds_since(std::chrono::steady_clock::time_point start) {
  char text[32];
  std::snprintf(text, sizeof text, "%.0f ms",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  return text;
}

}  // namespace

Result<std::unique_ptr<LoadedProgram>> compile_and_load(BuildPlan plan, const HeaderChoice& headers,
                                                        const std::string& running_release, const WallClock& clock,
                                                        const CacheUse& cache) {
  const auto started = std::chrono::steady_clock::now();
  std::string key;
  std::string miss;
  std::optional<WarmStart> warm;
  if (cache.cache != nullptr) {
    key = compile_key(plan, headers, cache);
    warm = start_from_cache(key, plan.source.path, *cache.cache, miss);
  }
  Result<Compiled> compiled = warm ? Compiled{std::move(warm->program), std::nullopt, std::nullopt, {}}
                                   : compile_with_headers(plan.text, plan.source, plan.cflags, headers,
                                                          running_release, /*quiet=*/plan.aggregate_in_kernel);
  if (!compiled && plan.aggregate_in_kernel) {
    // The counting code is generated from the declarations: a field they
    // name wrongly is reported at the declaration's line, as on the host
    // path, rather than as clang's complaint about the generated line.
    if (auto mistakes = declaration_mistakes(plan, headers, running_release)) return report_all_but_last(*mistakes);
    compiled = compile_with_headers(plan.text, plan.source, plan.cflags, headers, running_release);
  }
  if (!compiled) return std::move(compiled).take_error();

  // Nested structs: BCC records only "struct inner" for such a member, so
  // the program is compiled once more with a one-entry map per nested type
  // appended at its end (line numbers stay as they are), whose value type
  // BCC then describes in full.
  RecordLayouts records;
  {
    std::vector<std::string> nested;
    for (const auto& table : compiled->program->output_tables()) {
      for (const std::string& type : record_types_used(table.field_descriptions)) {
        if (std::find(nested.begin(), nested.end(), type) == nested.end()) nested.push_back(type);
      }
    }
    // A cached object is the second compile's, with those maps already.
    if (!nested.empty() && !compiled->program->has_table(layout_table_name(0))) {
      std::string text = plan.text;
      if (!text.empty() && text.back() != '\n') text.push_back('\n');
      for (size_t i = 0; i < nested.size(); ++i) {
        text += "BPF_ARRAY(" + layout_table_name(i) + ", " + nested[i] + ", 1);\n";
      }
      compiled = compile_with_headers(text, plan.source, plan.cflags, headers, running_release);
      if (!compiled) return std::move(compiled).take_error();
    }
    if (!nested.empty()) {
      for (size_t i = 0; i < nested.size(); ++i) {
        auto description = compiled->program->table_value_description(layout_table_name(i));
        if (!description) return runtime_error(plan.source.path + ": BCC did not describe " + nested[i]);
        auto layout = layout_from_bcc_type_description(*description);
        if (!layout) return runtime_error(plan.source.path + ": " + nested[i] + ": " + layout.error().message);
        records[nested[i]] = std::make_shared<const EventLayout>(std::move(layout).value());
      }
    }
  }

  auto loaded = std::make_unique<LoadedProgram>();
  loaded->plan = std::move(plan);
  const bcc::Program& program = *compiled->program;
  const std::string& path = loaded->plan.source.path;
  if (program.has_table("tcptrace_lost")) {
    loaded->lost_counter = UniqueFd(::fcntl(program.table_fd("tcptrace_lost"), F_DUPFD_CLOEXEC, 0));
  }
  for (auto& table : program.output_tables()) {
    if (table.name.rfind("tcptrace_layout_", 0) == 0) continue;
    UniqueFd own(::fcntl(table.map_fd, F_DUPFD_CLOEXEC, 0));
    if (!own.valid()) return runtime_error("cannot duplicate the fd of table '" + table.name + "'");
    table.map_fd = own.get();
    loaded->table_fds.push_back(std::move(own));
    loaded->tables.push_back(std::move(table));
  }

  for (const SeedDeclaration& seed : loaded->plan.annotations.seeds) {
    const std::string line = "tcptrace:seed " + std::string(seed_kind_name(seed.kind)) + "=" + seed.map;
    if (!program.has_table(seed.map)) return runtime_error(path + ": " + line + ": the program declares no such map");
    auto fd = duplicate_map_fd(program.table_fd(seed.map), seed.map);
    if (!fd) return std::move(fd).take_error();
    const bool listeners = seed.kind == SeedKind::tcp_listeners;
    Result<uint32_t> checked =
        listeners ? bcc::check_hash_map(fd->get(), seed.map, sizeof(tcptrace_listener_key), sizeof(tcptrace_listener))
                  : bcc::check_hash_map(fd->get(), seed.map, sizeof(tcptrace_connection_key), sizeof(tcptrace_owner));
    if (!checked) {
      return runtime_error(path + ": " + line + ": " + checked.error().message + " (" +
                           (listeners ? "struct tcptrace_listener_key -> struct tcptrace_listener"
                                      : "struct tcptrace_connection_key -> struct tcptrace_owner") +
                           ", tcptrace_owner.h)");
    }
    loaded->seeded_maps.push_back({seed.kind, seed.map, std::move(fd).value(), *checked});
  }

  if (loaded->plan.aggregate_in_kernel) {
    auto counts = take_kernel_counts(program, loaded->plan);
    if (!counts) return std::move(counts).take_error();
    loaded->kernel_counts.emplace(std::move(counts).value());
  }

  if (Status s = take_data_tables(program, loaded->plan.hints, clock, *loaded); !s) return std::move(s).take_error();

  size_t with_fields = 0;
  for (const auto& t : loaded->tables) with_fields += t.field_descriptions.empty() ? 0 : 1;
  if (with_fields == 0 && !loaded->kernel_counts && loaded->data_tables.empty()) {
    return runtime_error(path +
                         ": the program submits no struct to a BPF_PERF_OUTPUT or BPF_RINGBUF_OUTPUT table and "
                         "keeps no table to read (BPF_HISTOGRAM, integer counts in a BPF_HASH or BPF_ARRAY), "
                         "so there is nothing to print");
  }
  for (const auto& table : loaded->tables) {
    loaded->table_names.push_back(table.name);
    if (table.field_descriptions.empty()) {
      loaded->decoders.emplace_back();
      continue;
    }
    auto layout = parse_event_layout(table.field_descriptions, records);
    if (!layout) return runtime_error(path + ": table '" + table.name + "': " + layout.error().message);
    DecoderOptions decoder_options;
    // Table lines carry "event" too: with tables, every line names its source.
    if (with_fields > 1 || !loaded->data_tables.empty()) decoder_options.event_name = table.name;
    auto decoder =
        EventDecoder::make(std::move(layout).value(), loaded->plan.hints, table.name, decoder_options, clock);
    if (!decoder) return runtime_error(path + ": " + decoder.error().message);
    loaded->decoders.emplace_back(std::move(decoder).value());
  }

  if (loaded->kernel_counts) {
    loaded->metrics = kernel_counted_metrics(loaded->plan.declarations.metrics);
  } else {
    std::vector<const EventLayout*> layouts;
    for (const auto& decoder : loaded->decoders) layouts.push_back(decoder ? &decoder->layout() : nullptr);
    auto bound = bind_metric_fields(loaded->plan.declarations.metrics, loaded->table_names, layouts, path);
    if (!bound) return report_all_but_last(std::move(bound).take_error());
    loaded->metrics = std::move(bound).value();
  }

  loaded->probes = attach_plan(program.functions());
  if (loaded->probes.empty()) {
    return runtime_error(path + ": the program declares no probe (TRACEPOINT_PROBE, RAW_TRACEPOINT_PROBE, "
                                "kprobe__fn, kretprobe__fn, KFUNC_PROBE, KRETFUNC_PROBE)");
  }
  if (warm) {
    loaded->functions = std::move(warm->functions);
  } else {
    for (const ProbeSpec& probe : loaded->probes) {
      auto function = load_function(program, probe, loaded->plan.source);
      if (!function) return std::move(function).take_error();
      loaded->functions.push_back(std::move(function).value());
    }
  }
  if (cache.cache != nullptr) {
    const std::string& dir = cache.cache->dir();
    if (warm) {
      report("cache: loaded " + path + " from " + dir + " in " + milliseconds_since(started) + ", no compile");
    } else {
      std::string stored = "stored in " + dir;
      auto object = program.export_object();
      if (!compiled->dependencies) {
        stored = "not stored: the compiler did not name every file it read";
      } else if (!object) {
        stored = "not stored: " + object.error().message;
      } else {
        object->compiler_warnings = compiled->warnings;
        std::vector<FileIdentity> dependencies;
        for (const std::string& file : *compiled->dependencies) dependencies.push_back(identify_file(file));
        for (const std::string& library : compiler_libraries()) dependencies.push_back(identify_file(library));
        if (Status s = cache.cache->store(key, *object, dependencies); !s) stored = "not stored: " + s.error().message;
      }
      report("cache: compiled " + path + " in " + milliseconds_since(started) + " (" + miss + "); " + stored);
    }
  }
  // Done with the compiler: destroy the module (LLVM's context, BCC's own
  // table fds, the merged header tree) and hand the freed heap back.
  { Compiled finished = std::move(compiled).value(); }
  malloc_trim(0);
  return loaded;
}

std::string seed_socket_owners(const LoadedProgram& loaded) {
  if (loaded.seeded_maps.empty()) return {};
  const auto started = std::chrono::steady_clock::now();
  SocketTableOptions options;
  options.all_namespaces = loaded.plan.seed_by_netns;
  auto table = read_socket_table(options);
  if (!table) {
    return "owners of sockets older than the tracer are unknown: cannot read the socket table: " +
           table.error().message;
  }
  const OwnerSeed seed = plan_owner_seed(*table, loaded.plan.seed_by_netns);
  size_t full = 0, failed = 0;
  std::string failure;
  auto insert = [&](int fd, const void* key, const void* value) {
    // EEXIST: the program learnt that entry itself since attaching.
    const int error = bcc::insert_map_element(fd, key, value);
    if (error == 0 || error == EEXIST) return;
    if (error == E2BIG) {
      ++full;
    } else {
      ++failed;
      failure = std::strerror(error);
    }
  };
  std::string over_capacity;
  for (const SeededMap& map : loaded.seeded_maps) {
    const bool listeners = map.kind == SeedKind::tcp_listeners;
    const size_t entries = listeners ? seed.listeners.size() : seed.connections.size();
    if (entries > map.capacity) {
      over_capacity += "; map '" + map.name + "' holds " + std::to_string(map.capacity) + " of its " +
                       std::to_string(entries) + " entries";
    }
    if (listeners) {
      for (const auto& [key, value] : seed.listeners) insert(map.fd.get(), &key, &value);
    } else {
      for (const auto& [key, value] : seed.connections) insert(map.fd.get(), &key, &value);
    }
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  char elapsed[32];
  std::snprintf(elapsed, sizeof elapsed, "%.1f ms", ms);
  std::string line = "seeded socket owners from the socket table: " + std::to_string(seed.listening_sockets) +
                     " listening sockets, " + std::to_string(seed.connections.size()) + " connections (" +
                     std::to_string(seed.unowned) + " with no owning process) in " + std::to_string(table->namespaces) +
                     " network namespace" + (table->namespaces == 1 ? "" : "s") + ", " + elapsed;
  if (!loaded.plan.seed_by_netns) {
    line += "; only this network namespace, as sockets cannot be told apart by namespace without BTF (" +
            loaded.plan.seed_netns_missing + ")";
  }
  line += over_capacity;
  if (full > 0) line += "; " + std::to_string(full) + " entries did not fit (the map is full)";
  if (failed > 0) line += "; " + std::to_string(failed) + " entries failed: " + failure;
  if (!table->skipped.empty()) {
    line += "; skipped " + std::to_string(table->skipped.size()) + " namespace(s): " + table->skipped.front();
  }
  return line;
}

std::string check_report_json(const LoadedProgram& loaded) {
  std::function<nlohmann::json(const EventLayout&)> fields_of = [&](const EventLayout& layout) {
    nlohmann::json fields = nlohmann::json::array();
    for (const FieldLayout& field : layout.fields) {
      nlohmann::json entry = {{"name", field.name}, {"type", field.type}, {"offset", field.offset},
                              {"size", field.size()}};
      if (field.record) entry["fields"] = fields_of(*field.record);
      fields.push_back(entry);
    }
    return fields;
  };
  nlohmann::json report = {{"program", loaded.plan.name}, {"source", loaded.plan.source.path}};
  report["attach_method"] =
      loaded.plan.method ? nlohmann::json(std::string(method_name(*loaded.plan.method))) : nlohmann::json(nullptr);
  report["probes"] = nlohmann::json::array();
  for (const ProbeSpec& probe : loaded.probes) {
    nlohmann::json entry = {{"kind", std::string(kind_name(probe.kind))}, {"function", probe.function}};
    entry["target"] = probe.kind == ProbeKind::tracepoint ? probe.category + ":" + probe.target : probe.target;
    report["probes"].push_back(entry);
  }
  // Where --metrics would count: the kernel (the aggregating variant, which
  // has no outputs) or the host (from the outputs' events).
  report["aggregation"] = loaded.plan.aggregate_in_kernel ? "kernel" : "host";
  // The declared metrics, where they are counted, and their labels.
  report["metrics"] = nlohmann::json::array();
  for (const BoundMetric& metric : loaded.metrics) {
    const MetricDeclaration& d = metric.declaration;
    nlohmann::json labels = nlohmann::json::array();
    for (const MetricLabel& label : d.labels) {
      labels.push_back({{"name", label.name}, {"field", label.field}, {"opt_in", label.opt_in}});
    }
    nlohmann::json entry = {{"name", d.name},
                            {"kind", d.kind == MetricKind::counter ? "counter" : "histogram"},
                            {"line", d.line},
                            {"labels", labels}};
    entry["table"] = metric.table_index < loaded.table_names.size()
                         ? nlohmann::json(loaded.table_names[metric.table_index])
                         : nlohmann::json(nullptr);
    if (d.kind == MetricKind::histogram) {
      entry["value"] = d.value_field;
      entry["unit"] = d.unit;
      entry["bounds"] = d.exported_bounds();
    }
    report["metrics"].push_back(entry);
  }
  // Those read from the program's tables (map=), as bound to their keys.
  for (const TableView& view : loaded.data_tables) {
    const TableMetricBinding* metric = view.metric();
    if (metric == nullptr) continue;
    const MetricDeclaration& d = metric->declaration;
    nlohmann::json labels = nlohmann::json::array();
    for (const TableMetricBinding::Label& l : metric->labels) {
      labels.push_back({{"name", l.label.name}, {"field", l.label.field}, {"opt_in", l.label.opt_in}});
    }
    nlohmann::json entry = {{"name", d.name},
                            {"kind", d.kind == MetricKind::counter ? "counter" : "histogram"},
                            {"line", d.line},
                            {"labels", labels},
                            {"map", d.map}};
    if (d.kind == MetricKind::histogram) {
      entry["unit"] = std::string(table_unit_name(view.spec().unit));
      entry["buckets"] = "log2";
    }
    report["metrics"].push_back(entry);
  }
  // tcptrace:offsets: each member's offset in the running kernel, or null
  // and why (the macro is then not defined).
  report["offsets"] = nlohmann::json::array();
  for (const ResolvedOffset& r : loaded.plan.offsets) {
    nlohmann::json entry = {{"name", offset_macro(r.declaration.name)},
                            {"member", r.declaration.struct_name + "." + r.declaration.member_path}};
    entry["offset"] = r.offset ? nlohmann::json(*r.offset) : nlohmann::json(nullptr);
    if (!r.offset) entry["missing"] = r.missing;
    report["offsets"].push_back(entry);
  }
  // The program's own tables the host reads (tcptrace:tables), with the
  // decoded layout of their keys.
  report["tables"] = nlohmann::json::array();
  for (const TableView& view : loaded.data_tables) {
    const TableSpec& spec = view.spec();
    nlohmann::json entry = {{"table", spec.name},
                            {"shape", spec.shape == TableShape::histogram ? "histogram" : "counts"},
                            {"listed", spec.listed},
                            {"key", fields_of(spec.key_layout)}};
    if (spec.unit != TableUnit::none) entry["unit"] = std::string(table_unit_name(spec.unit));
    report["tables"].push_back(entry);
  }
  report["outputs"] = nlohmann::json::array();
  for (size_t i = 0; i < loaded.tables.size(); ++i) {
    nlohmann::json table = {
        {"table", loaded.tables[i].name},
        {"kind", loaded.tables[i].kind == bcc::OutputKind::ring_buffer ? "ring_buffer" : "perf_buffer"}};
    if (loaded.decoders[i]) {
      table["size"] = loaded.decoders[i]->layout().size;
      table["fields"] = fields_of(loaded.decoders[i]->layout());
    } else {
      table["fields"] = nlohmann::json::array();
    }
    report["outputs"].push_back(table);
  }
  return report.dump() + "\n";
}

}  // namespace tcptrace
