#include "app.h"

#include <signal.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>

#include "bcc_backend.h"
#include "compile_cache.h"
#include "compile_inputs.h"
#include "diagnostics.h"
#include "event_output.h"
#include "kernel_headers.h"
#include "kernel_probe.h"
#include "metrics.h"
#include "metrics_report.h"
#include "metrics_server.h"
#include "privileges.h"
#include "program_loader.h"
#include "program_source.h"
#include "system_checks.h"
#include "table_output.h"
#include "trusted_file.h"
#include "wall_clock.h"

namespace tcptrace {
namespace {

volatile sig_atomic_t g_stop_signal = 0;

void on_stop_signal(int signal) { g_stop_signal = signal; }

// SIGINT/SIGTERM only set a flag: the poll loop sees poll() fail with EINTR
// (no SA_RESTART) and ends the run through the normal teardown. SIGPIPE is
// ignored so a closed stdout shows up as EPIPE from write().
class SignalHandlers {
 public:
  SignalHandlers() {
    g_stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &old_pipe_);
  }
  ~SignalHandlers() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGPIPE, &old_pipe_, nullptr);
  }
  SignalHandlers(const SignalHandlers&) = delete;
  SignalHandlers& operator=(const SignalHandlers&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
  struct sigaction old_pipe_ {};
};

double monotonic_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

void write_stdout(const std::string& text) { write_all(STDOUT_FILENO, text); }

Result<ProgramSource> read_source(const Options& options, const ProgramLocations& where) {
  if (options.program_file) return read_program_file(*options.program_file);
  return read_named_program(where, *options.program);
}

// Reads the maps of a program that aggregates in the kernel into the
// metrics: at every scrape (on the metrics server's thread) and once more
// when the program stops, so nothing counted before it detached is lost.
// The lock also keeps a scrape from reading maps whose fds are closing.
class AggregateScraper {
 public:
  explicit AggregateScraper(Metrics& metrics) : metrics_(metrics) {}
  AggregateScraper(const AggregateScraper&) = delete;
  AggregateScraper& operator=(const AggregateScraper&) = delete;

  void start(LoadedProgram& program) {
    std::lock_guard lock(mutex_);
    program_ = &program;
  }
  // A last read, then no more; only if `program` is the one being read.
  void stop(const LoadedProgram& program) {
    std::lock_guard lock(mutex_);
    if (program_ != &program) return;
    read_locked();
    program_ = nullptr;
  }
  void refresh() {
    std::lock_guard lock(mutex_);
    read_locked();
  }
  // The declared metrics' report, the kernel's counts read first; under the
  // lock, as a scrape may create series meanwhile.
  std::string render(MetricsReport& report) {
    std::lock_guard lock(mutex_);
    read_locked();
    return report.render();
  }
  // Events counted in the kernel since the tool started, over all versions.
  uint64_t events() {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  void read_locked() {
    if (program_ == nullptr || !program_->kernel_counts) return;
    KernelCounts& counts = *program_->kernel_counts;
    events_ += counts.feed.feed(read_kernel_counts(counts), metrics_);
  }

  Metrics& metrics_;
  std::mutex mutex_;
  LoadedProgram* program_ = nullptr;
  uint64_t events_ = 0;
};

// A program version that is attached and delivering events. Members are
// destroyed in reverse order: probes detach first, then the buffers close,
// then the sink and the loaded program go.
struct ActiveProgram {
  std::unique_ptr<LoadedProgram> loaded;
  std::unique_ptr<EventOutput> sink;
  std::unique_ptr<bcc::OutputReader> reader;
  std::vector<std::unique_ptr<bcc::Attachment>> attachments;
  std::vector<uint64_t> misses_seen;  // recursion_misses per loaded function
  std::vector<uint64_t> drops_seen;  // tcptrace_lost per CPU
  uint64_t misses_total = 0;
  Metrics* metrics = nullptr;  // --metrics, else null
  std::string metrics_fed;     // which program metrics its events (or maps) feed
  AggregateScraper* scraper = nullptr;  // reading loaded's maps, when it aggregates in the kernel

  ActiveProgram() = default;
  ActiveProgram(const ActiveProgram&) = delete;
  ActiveProgram& operator=(const ActiveProgram&) = delete;
  ~ActiveProgram() {
    if (scraper != nullptr && loaded) scraper->stop(*loaded);
  }

  // Detaches, then delivers what the buffers still hold (or reads the
  // kernel's counts a last time).
  void stop() {
    attachments.clear();
    if (reader) reader->drain();
    if (scraper != nullptr && loaded) scraper->stop(*loaded);
  }

  // Waits up to timeout_ms for events and delivers them; false when polling
  // failed. A program counting in the kernel has no buffers: it only waits
  // (a signal ends the wait early, as it does a poll).
  bool wait_for_events(int timeout_ms) {
    if (reader) return reader->poll(timeout_ms);
    ::poll(nullptr, 0, timeout_ms);
    return true;
  }
};

// A probe the kernel cannot attach gets a reason before the kernel's bare
// errno: kprobes and fentry need kernel support this machine may lack, and a
// tracepoint must exist in tracefs.
Status check_probe_kinds(const LoadedProgram& loaded) {
  bool needs_kprobe = false, needs_kfunc = false;
  for (const ProbeSpec& probe : loaded.probes) {
    if (probe.kind == ProbeKind::tracepoint) {
      struct stat st {};
      const std::string dir = "events/" + probe.category + "/" + probe.target;
      if (::stat(("/sys/kernel/debug/tracing/" + dir).c_str(), &st) != 0 &&
          ::stat(("/sys/kernel/tracing/" + dir).c_str(), &st) != 0) {
        return runtime_error("cannot attach " + describe(probe) + ": this kernel has no such tracepoint (no " +
                             dir + " in tracefs)");
      }
    }
    needs_kprobe |= probe.kind == ProbeKind::kprobe || probe.kind == ProbeKind::kretprobe;
    needs_kfunc |= probe.kind == ProbeKind::kfunc || probe.kind == ProbeKind::kretfunc;
  }
  if (!needs_kprobe && !needs_kfunc) return {};
  const KernelCapabilities kernel = probe_kernel_capabilities();
  for (const ProbeSpec& probe : loaded.probes) {
    const bool is_kprobe = probe.kind == ProbeKind::kprobe || probe.kind == ProbeKind::kretprobe;
    const bool is_kfunc = probe.kind == ProbeKind::kfunc || probe.kind == ProbeKind::kretfunc;
    if (is_kprobe && !kernel.kprobe.available) {
      return runtime_error("cannot attach " + describe(probe) + ": " + kernel.kprobe.reason);
    }
    if (is_kfunc && !kernel.kfunc.available) {
      return runtime_error("cannot attach " + describe(probe) + ": " + kernel.kfunc.reason);
    }
  }
  return {};
}

// Opens the buffers of a loaded program and attaches its probes.
// With metrics, binds them to the program's event layouts first.
// With metrics from a program that aggregates in the kernel, `scraper`
// reads its maps from the moment its probes are attached.
Result<std::unique_ptr<ActiveProgram>> activate(std::unique_ptr<LoadedProgram> loaded, StdoutWriter& writer,
                                                int buffer_pages, RawRecorder* recorder, Metrics* metrics = nullptr,
                                                bool json = true, AggregateScraper* scraper = nullptr) {
  if (Status s = check_probe_kinds(*loaded); !s) return std::move(s).take_error();
  auto active = std::make_unique<ActiveProgram>();
  active->metrics = metrics;
  const BuildPlan& plan = loaded->plan;
  if (metrics != nullptr) {
    // "A, B counted in the kernel, C read from its maps," or "A, B": what
    // the ready line's "serving metrics" says before "and health".
    const std::string from_events = metrics->bind(loaded->metrics);
    if (!from_events.empty()) active->metrics_fed = from_events + (loaded->kernel_counts ? " counted in the kernel," : "");
    // Those read from the program's tables (map=) are counted in the
    // kernel by the program itself, whatever --aggregate says.
    std::string from_tables;
    for (const TableView& view : loaded->data_tables) {
      if (view.metric() != nullptr) from_tables += (from_tables.empty() ? "" : ", ") + view.metric()->declaration.name;
    }
    if (!from_tables.empty()) {
      active->metrics_fed += (active->metrics_fed.empty() ? "" : " ") + from_tables + " read from its maps,";
    }
    metrics->set_probes_attached(0);
  }
  active->sink =
      std::make_unique<EventOutput>(writer, loaded->decoders, loaded->table_names, recorder, metrics, json);
  if (loaded->lost_counter.valid()) active->sink->ignore_kernel_lost_records();
  if (!loaded->tables.empty()) {
    auto reader = bcc::OutputReader::open(loaded->tables, *active->sink, buffer_pages);
    if (!reader) return std::move(reader).take_error();
    active->reader = std::move(reader).value();
  }
  for (const bcc::LoadedFunction& function : loaded->functions) {
    auto attachment = bcc::Attachment::attach(function);
    if (!attachment) return std::move(attachment).take_error();
    active->attachments.push_back(std::move(attachment).value());
  }
  // Attached first, then seeded: a socket created meanwhile is seen by the
  // probes, one that existed before is in the table.
  if (std::string seeded = seed_socket_owners(*loaded); !seeded.empty()) report(seeded);
  active->misses_seen.assign(loaded->functions.size(), 0);
  if (metrics != nullptr) {
    metrics->set_probes_attached(active->attachments.size());
    metrics->set_program(plan.name, plan.method ? std::string(method_name(*plan.method)) : "",
                         loaded->kernel_counts ? "none" : plan.ring_buffer ? "ringbuf" : "perf",
                         loaded->kernel_counts ? "kernel" : "host");
  }
  active->loaded = std::move(loaded);
  if (scraper != nullptr && active->loaded->kernel_counts) {
    scraper->start(*active->loaded);
    active->scraper = scraper;
  }
  return active;
}

std::string attached_text(const ActiveProgram& active) {
  const LoadedProgram& loaded = *active.loaded;
  std::string probes;
  for (const auto& attachment : active.attachments) {
    probes += (probes.empty() ? "" : ", ") + describe(attachment->probe());
  }
  std::string method =
      loaded.plan.method ? " (attach: " + std::string(method_name(*loaded.plan.method)) + ")" : "";
  if (loaded.kernel_counts) {
    method += " (counting in the kernel)";
  } else if (loaded.plan.annotations.ring_buffer_capable || !loaded.plan.declarations.outputs.empty()) {
    method += loaded.plan.ring_buffer ? " (ring buffer)" : " (perf buffers)";
  }
  const size_t n = active.attachments.size();
  return "program " + loaded.plan.name + method + ", " + std::to_string(n) + " probe" + (n == 1 ? "" : "s") +
         " attached (" + probes + ")";
}

// Reports events the program could not submit since the last look, per CPU,
// from its `tcptrace_lost` counters.
void report_buffer_drops(ActiveProgram& active, StdoutWriter& writer) {
  if (!active.loaded->lost_counter.valid()) return;
  const std::vector<uint64_t> now = bcc::read_percpu_u64(active.loaded->lost_counter.get());
  active.drops_seen.resize(now.size(), 0);
  for (size_t cpu = 0; cpu < now.size(); ++cpu) {
    if (now[cpu] <= active.drops_seen[cpu]) continue;
    const uint64_t lost = now[cpu] - active.drops_seen[cpu];
    active.drops_seen[cpu] = now[cpu];
    writer.add_lost(static_cast<int>(cpu), lost,
                    std::string(active.loaded->plan.ring_buffer ? ": the ring buffer" : ": the perf buffer") +
                        " was full, the reader fell behind; a larger --buffer-pages helps");
    if (active.metrics != nullptr) active.metrics->add_lost_buffer(lost);
  }
}

// Reports runs the kernel skipped since the last look (recursion_misses):
// each is an event lost before it reached any buffer.
void report_recursion_misses(ActiveProgram& active, StdoutWriter& writer) {
  for (size_t i = 0; i < active.loaded->functions.size(); ++i) {
    const bcc::LoadedFunction& function = active.loaded->functions[i];
    const uint64_t now = function.recursion_misses().value_or(0);
    if (now > active.misses_seen[i]) {
      writer.add_skipped_runs(describe(function.probe()), now - active.misses_seen[i]);
      active.misses_total += now - active.misses_seen[i];
      if (active.metrics != nullptr) active.metrics->add_skipped_runs(now - active.misses_seen[i]);
      active.misses_seen[i] = now;
    }
  }
}

// Watches the program file by its modification time and size: simple, and
// it also sees editors that replace the file instead of writing into it.
class FileWatch {
 public:
  explicit FileWatch(std::string path) : path_(std::move(path)) { changed(); }
  bool changed() {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) return false;  // mid-save: try later
    const auto stamp = std::make_pair(st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec, st.st_size);
    if (stamp == stamp_) return false;
    stamp_ = stamp;
    return true;
  }

 private:
  std::string path_;
  std::pair<long long, off_t> stamp_{-1, -1};
};

// kernel_events: events counted in the kernel (in-kernel aggregation),
// which never reached the writer.
std::string summary_line(const StdoutWriter& writer, uint64_t skipped, std::optional<uint64_t> kernel_events) {
  std::string lost = std::to_string(writer.lost()) + " lost (buffer";
  for (const auto& [cpu, count] : writer.lost_by_cpu()) {
    lost += ", CPU " + std::to_string(cpu) + ": " + std::to_string(count);
  }
  lost += ")";
  const std::string events = kernel_events ? std::to_string(*kernel_events) + " events (counted in the kernel)"
                                           : std::to_string(writer.events()) + " events";
  std::string line = events + ", " + lost + ", " + std::to_string(skipped) + " skipped runs (recursion_misses)";
  if (writer.truncated() > 0) line += ", " + std::to_string(writer.truncated()) + " truncated samples";
  if (g_stop_signal != 0) line += "; stopped by " + std::string(g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
  return line;
}

// True, after one line, when SIGINT or SIGTERM came during the start-up:
// the run then ends (status 0, as for a signal after "ready") with nothing
// attached.
bool stopped_during_startup() {
  if (g_stop_signal == 0) return false;
  report(std::string("stopped by ") + (g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM") +
         " during start-up; nothing was attached");
  return true;
}

}  // namespace

Status run(const Options& options) {
  if (!options.list && !options.print_source) {
    if (Status s = check_privileges(); !s) return s;
  }
  auto where = find_program_locations(options.programs_dir);
  if (!where) return std::move(where).take_error();

  if (options.list) {
    std::string text;
    for (const std::string& name : list_programs(where->programs_dir)) {
      auto source = read_named_program(*where, name);
      text += name + std::string(name.size() < 10 ? 10 - name.size() : 1, ' ') +
              (source ? program_summary(source->text) : "") + "\n";
    }
    write_stdout(text);
    return {};
  }

  auto source = read_source(options, *where);
  if (!source) return std::move(source).take_error();
  // --watch compares with the file as read here: an edit made while the
  // program compiles, or as soon as the ready line is out, is a change.
  std::optional<FileWatch> watch;
  if (options.watch) watch.emplace(source->path);
  const HeaderSearchPaths search = default_header_search_paths();

  if (options.print_source) {
    auto plan = plan_build(options, *where, std::move(source).value());
    if (!plan) return std::move(plan).take_error();
    auto headers = choose_kernel_headers(search, options.kernel_headers);
    if (!headers) return std::move(headers).take_error();
    write_stdout(render_source_for_print(*plan, *headers));
    return {};
  }

  // From here on SIGINT and SIGTERM only set a flag, so a signal during the
  // compile (seconds of BCC and clang) ends the run through the destructors
  // below, which remove what the start-up made, instead of killing it.
  SignalHandlers signals;

  // --record-raw is opened before anything is compiled or loaded, like the
  // metrics port below: a file it refuses fails at once, with nothing to
  // undo.
  std::optional<UniqueFd> raw_file;
  std::optional<RawRecorder> recorder;
  if (options.record_raw && !options.check) {
    auto opened = open_private_output("--record-raw", *options.record_raw, file_trust_for_this_process());
    if (!opened) return std::move(opened).take_error();
    raw_file.emplace(std::move(opened).value());
  }

  // The metrics port is bound before anything is compiled or loaded: an
  // address in use fails at once, with nothing to undo.
  // Declared in this order so the server (whose scrapes use the scraper,
  // which feeds the metrics) stops first.
  std::unique_ptr<Metrics> metrics;
  std::unique_ptr<AggregateScraper> scraper;
  std::unique_ptr<MetricsServer> metrics_server;
  // The declared metrics are counted for --metrics, and for the reports of
  // --output text and --interval (metrics_report.h) without a server.
  const bool reports_metrics = options.output == Options::Output::text || options.interval_seconds.has_value();
  if (options.metrics || reports_metrics) {
    MetricsConfig config;
    config.opt_in_labels = options.metrics_labels;
    config.label_limit = options.metrics_label_limit;
    config.version = TCPTRACE_VERSION;
    config.bcc_version = TCPTRACE_BCC_VERSION;
    metrics = std::make_unique<Metrics>(std::move(config));
    scraper = std::make_unique<AggregateScraper>(*metrics);
  }
  // Once the probes are attached nothing needs root's power but --watch,
  // which loads again (privileges.h). Asked before any thread exists.
  std::optional<PrivilegePlan> privileges;
  if (!options.watch && !options.check) privileges = plan_privilege_drop();
  if (options.metrics) {
    std::optional<WebConfig> web;
    if (options.web_config) {
      auto loaded_web = load_web_config(*options.web_config);
      if (!loaded_web) return std::move(loaded_web).take_error();
      web = std::move(loaded_web).value();
    }
    auto server = MetricsServer::start(*options.metrics, metrics->registry(),
                                       [reader = scraper.get()] { reader->refresh(); }, web ? &*web : nullptr,
                                       privileges ? &*privileges : nullptr);
    if (!server) return std::move(server).take_error();
    metrics_server = std::move(server).value();
  }
  const bool json = options.output != Options::Output::none;  // event lines, as JSON or text
  // The program's tables as Prometheus series, kept across --watch versions.
  std::unique_ptr<TableMetrics> table_metrics;
  if (metrics) table_metrics = std::make_unique<TableMetrics>(metrics->registry(), options.metrics_label_limit);

  std::string tracefs_note;
  if (Status s = ensure_tracefs(tracefs_note); !s) return s;
  if (!tracefs_note.empty()) report(tracefs_note);

  auto plan = plan_build(options, *where, std::move(source).value());
  if (!plan) return std::move(plan).take_error();
  auto headers = choose_kernel_headers(search, options.kernel_headers);
  if (!headers) return std::move(headers).take_error();
  if (std::string line = describe_header_choice(*headers, search.running_release); !line.empty()) report(line);
  headers = unpack_kheaders(std::move(headers).value());
  if (!headers) return std::move(headers).take_error();
  if (stopped_during_startup()) return {};

  // The compile cache: --check always compiles (it is asked to), and a
  // default directory that cannot be used only turns the cache off; one
  // asked for with --cache-dir must work.
  // TCPTRACE_TEST_NO_CACHE: the integration tests' runs compile as they
  // always did unless a test asks for a cache with --cache-dir.
  const bool cache_off_for_tests = std::getenv("TCPTRACE_TEST_NO_CACHE") != nullptr && !options.cache_dir;
  std::optional<CompileCache> compile_cache;
  if (!options.no_cache && !options.check && !cache_off_for_tests) {
    auto opened = CompileCache::open(options.cache_dir.value_or(kDefaultCacheDir), kDefaultCacheBytes);
    if (opened) {
      compile_cache.emplace(std::move(opened).value());
    } else if (options.cache_dir) {
      return std::move(opened).take_error();
    } else {
      report("cache: off: " + opened.error().message);
    }
  }
  CacheUse cache_use{compile_cache ? &*compile_cache : nullptr, TCPTRACE_VERSION, TCPTRACE_BCC_VERSION, std::nullopt};
  if (const char* formats = std::getenv("TCPTRACE_TEST_TRACEPOINT_FORMATS")) cache_use.tracepoint_format_root = formats;

  const WallClock clock;
  auto loaded = compile_and_load(std::move(plan).value(), *headers, search.running_release, clock, cache_use);
  // A signal during the compile may also have cut short one of BCC's reads
  // (EINTR); the stop wins over what that did to the compile.
  if (stopped_during_startup()) return {};
  if (!loaded) return std::move(loaded).take_error();

  if (options.check) {
    write_stdout(check_report_json(**loaded));
    const size_t n = (*loaded)->functions.size();
    report("check passed: " + (*loaded)->plan.source.path + " compiled and " + std::to_string(n) + " probe" +
           (n == 1 ? "" : "s") + " passed the verifier; nothing attached");
    return {};
  }

  StdoutWriter writer(STDOUT_FILENO, options.count);
  if (raw_file) recorder.emplace(raw_file->get());
  RawRecorder* const recording = recorder ? &*recorder : nullptr;
  auto activated = activate(std::move(loaded).value(), writer, options.buffer_pages, recording, metrics.get(), json, scraper.get());
  if (!activated) return std::move(activated).take_error();
  std::unique_ptr<ActiveProgram> active = std::move(activated).value();
  // The program's tables, read at every --interval and at the end; and text
  // rows instead of JSON for --output text.
  std::unique_ptr<TableOutput> tables;
  auto start_tables = [&] {
    if (options.output == Options::Output::text) active->sink->use_text_columns(text_columns_for(*active->loaded));
    tables = start_table_output(*active->loaded, options, writer, table_metrics.get(), clock, monotonic_seconds());
  };
  auto finish_tables = [&] {
    if (!tables) return;
    tables->finish();
    if (std::string error = tables->take_error(); !error.empty()) report(error);
    tables.reset();
  };
  start_tables();
  if (std::string line = describe_tables(*active->loaded, options); !line.empty()) report(line);
  // The compiler is done: give LLVM's memory back (bcc_free_memory).
  bcc::release_compiler_memory();
  if (metrics_server) {
    report("serving metrics at " + metrics_server->url() +
           (active->metrics_fed.empty()
                ? " (health only: the program declares no tcptrace:metric)"
                : " (" + active->metrics_fed + " and health)"));
  }
  if (privileges) {
    if (Status s = drop_privileges(*privileges); !s) return s;
    if (privileges->keep_bpf) report("kept CAP_BPF alone after attaching: " + privileges->reason);
  }
  report("ready: " + attached_text(*active));
  // From here until the summary, a stderr nobody reads never stops the loop.
  std::optional<NonBlockingReports> quiet_stderr;
  quiet_stderr.emplace();

  uint64_t retired_misses = 0;  // skipped runs of versions replaced by --watch

  std::optional<MetricsReport> metrics_report;
  if (reports_metrics) {
    metrics_report.emplace(*metrics, options.output == Options::Output::text, options.accumulate, clock);
  }
  auto print_metrics_report = [&] {
    if (!metrics_report) return;
    writer.buffer() += scraper->render(*metrics_report);
    writer.flush();
  };

  const double started = monotonic_seconds();
  double last_slow_check = started;
  double next_report = started + options.interval_seconds.value_or(0);
  constexpr int kPollMs = 100;
  bool polling_failed = false;
  while (g_stop_signal == 0 && writer.wants_events()) {
    if (options.duration_seconds && monotonic_seconds() - started >= *options.duration_seconds) break;
    if (!active->wait_for_events(kPollMs)) {
      polling_failed = true;
      break;
    }
    if (tables) {
      tables->tick(monotonic_seconds());
      if (std::string error = tables->take_error(); !error.empty()) report(error);
    }
    if (options.interval_seconds && monotonic_seconds() >= next_report) {
      print_metrics_report();
      while (next_report <= monotonic_seconds()) next_report += *options.interval_seconds;
    }
    writer.flush();
    if (monotonic_seconds() - last_slow_check < 0.5) continue;
    last_slow_check = monotonic_seconds();
    report_recursion_misses(*active, writer);
    report_buffer_drops(*active, writer);
    writer.tick_reports();
    // Without event lines (--output none) stdout is not ours to watch.
    if (json && writer.reader_closed()) break;
    if (!watch || !watch->changed()) continue;

    // --watch: build the new version beside the running one; swap only if
    // it compiles, loads and attaches.
    auto new_source = read_program_file(active->loaded->plan.source.path);
    auto new_plan = new_source ? plan_build(options, *where, std::move(new_source).value())
                               : Result<BuildPlan>(std::move(new_source).take_error());
    auto new_loaded = new_plan ? compile_and_load(std::move(new_plan).value(), *headers, search.running_release, clock,
                                                cache_use)
                               : Result<std::unique_ptr<LoadedProgram>>(std::move(new_plan).take_error());
    if (!new_loaded) {
      report(new_loaded.error().message + "; the previous version keeps running");
      continue;
    }
    // Detach the old probes first so no event is reported twice, then
    // attach the new ones; the old buffers are drained before they close.
    active->stop();
    finish_tables();  // the old version's tables, a last time
    writer.flush();
    auto next =
        activate(std::move(new_loaded).value(), writer, options.buffer_pages, recording, metrics.get(), json, scraper.get());
    if (!next) {
      report(next.error().message + "; re-attaching the previous version");
      auto previous =
          activate(std::move(active->loaded), writer, options.buffer_pages, recording, metrics.get(), json, scraper.get());
      if (!previous) return std::move(previous).take_error();
      // The same loaded functions: their counters continue.
      (*previous)->misses_seen = active->misses_seen;
      (*previous)->misses_total = active->misses_total;
      active = std::move(previous).value();
      start_tables();
      continue;
    }
    report_recursion_misses(*active, writer);
    report_buffer_drops(*active, writer);
    retired_misses += active->misses_total;
    active = std::move(next).value();
    start_tables();
    bcc::release_compiler_memory();
    report("reloaded: " + attached_text(*active));
  }

  // Teardown: detach first so no new events arrive, then drain what the
  // buffers still hold and read the tables a last time, then flush.
  active->stop();
  finish_tables();
  writer.flush();
  print_metrics_report();
  report_recursion_misses(*active, writer);
  report_buffer_drops(*active, writer);
  const uint64_t skipped = retired_misses + active->misses_total;
  const bool kernel_counted = active->loaded->kernel_counts.has_value();
  active.reset();
  if (recorder) recorder->flush();
  writer.finish_reports();
  quiet_stderr.reset();  // the rest is written, blocking: the summary must arrive
  report(summary_line(writer, skipped, kernel_counted ? std::optional<uint64_t>(scraper->events()) : std::nullopt));
  if (polling_failed) return runtime_error("polling the event buffers failed");
  return {};
}

}  // namespace tcptrace
