// The command line, parsed into one struct by a pure function (no exit(), no
// printing): usage errors come back as Result errors with exit status 2.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "attach_method.h"
#include "filter_macros.h"
#include "metrics.h"
#include "result.h"

namespace tcptrace {

struct UserMacro {
  std::string name;
  std::optional<std::string> value;
};

// --buffer-pages cap: the buffers are kernel memory pinned per CPU (a ring
// buffer gets the pages of all CPUs), 4 MiB per CPU with 4 KiB pages.
inline constexpr int kMaxBufferPages = 1024;

struct Options {
  std::optional<std::string> program;       // --program NAME
  std::optional<std::string> program_file;  // --program-file FILE
  std::optional<std::string> programs_dir;  // --programs-dir DIR
  FilterSpec filters;
  std::vector<UserMacro> macros;            // -D NAME[=VALUE]
  std::optional<double> duration_seconds;   // --duration
  std::optional<uint64_t> count;            // --count
  std::optional<std::string> kernel_headers;  // --kernel-headers DIR
  std::optional<std::string> cache_dir;     // --cache-dir DIR (compile_cache.h); default kDefaultCacheDir
  bool no_cache = false;                    // --no-cache
  int buffer_pages = 64;                    // --buffer-pages, per CPU
  enum class Buffer { automatic, perf, ring } buffer = Buffer::automatic;  // --buffer
  std::optional<AttachMethod> attach;       // --attach; nullopt = auto
  bool check = false;                       // --check: compile + load only
  bool print_source = false;                // --print-source
  bool list = false;                        // --list
  bool watch = false;                       // --watch
  std::optional<std::string> record_raw;    // --record-raw FILE
  std::optional<MetricsAddress> metrics;    // --metrics ADDR
  std::optional<std::string> web_config;    // --web-config FILE (web_config.h), read at start
  enum class Output { json, none, text } output = Output::json;  // --output
  // --interval: print the program's tables every SECONDS (table_reader.h);
  // without it they are printed once, at the end.
  std::optional<double> interval_seconds;
  bool accumulate = false;                  // --accumulate: never clear the tables
  std::vector<std::string> metrics_labels;  // --metrics-label, opt-in labels by name
  size_t metrics_label_limit = kDefaultLabelLimit;  // --metrics-label-limit
  // --aggregate: where --metrics counts. automatic: in the kernel when
  // nothing needs the events in the host (--output none, no --metrics-label,
  // --count, --record-raw or --buffer) and the program can; else the host.
  enum class Aggregate { automatic, kernel, host } aggregate = Aggregate::automatic;
  // Filter options given, by name without "--" (validated against what the
  // program honours once its source is read).
  std::vector<std::string> filters_given;
  bool help = false;
  bool version = false;
};

Result<Options> parse_options(int argc, const char* const* argv);

// The first option given that needs every event in the host, so that
// --metrics cannot count in the kernel ("--metrics-label", "--count",
// "--record-raw", "--buffer"), or "" when none does. One list for the usage
// error of --aggregate kernel and the choice of --aggregate auto.
std::string option_needing_events_in_host(const Options& options);

// The --help text.
std::string usage_text();

}  // namespace tcptrace
