// What a compile's result depends on, gathered for the compile cache
// (compile_cache.h): the inputs that go into an entry's key, known before
// compiling, and the files the compiler read, known after it (its
// dependency file), whose identities an entry keeps and a later start checks.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernel_headers.h"

namespace tcptrace {

// Where compiled programs are kept unless --cache-dir says otherwise, and
// how much the entries there may take together (an entry is tens of KB).
inline constexpr const char* kDefaultCacheDir = "/var/cache/tcptrace-bcc";
inline constexpr uint64_t kDefaultCacheBytes = uint64_t{64} << 20;

// Everything besides the files it reads that can change what BCC makes of a
// program: the exact text and flags it is handed (the filters, -D macros,
// attach method and buffer kind are all in them), the compiler, the kernel,
// the CPUs a perf output array is sized for, the header trees it may search,
// and the format of every tracepoint whose record BCC turns into a struct.
struct CompileInputs {
  std::string source_path;  // the warnings an entry replays name it
  std::string text;
  std::vector<std::string> cflags;
  std::string tool_version;
  std::string bcc_version;             // libbcc's, as built against
  std::string compiler_module;         // the module file's identity (path, inode, size, times)
  std::string kernel_release;          // uname -r
  std::string kernel_build;            // uname -v
  std::string machine;                 // uname -m
  std::string possible_cpus;           // /sys/devices/system/cpu/possible
  std::string headers;                 // describe_header_trees()
  std::vector<std::pair<std::string, std::string>> tracepoint_formats;  // "category:event", its format ("" when absent)
};

// The key of a compile: SHA-256 over every field, each under its own label.
std::string compile_cache_key(const CompileInputs& inputs);

// The header choice as the key sees it: how it was chosen and every tree BCC
// may be handed, in order (the files in them are dependencies of their own).
std::string describe_header_trees(const HeaderChoice& choice);

// The format files BCC reads for `text`'s TRACEPOINT_PROBE lines, where it
// looks for them (/sys/kernel/debug/tracing, then /sys/kernel/tracing), or
// below `format_root` when set (the tests' stand-in for tracefs).
std::vector<std::pair<std::string, std::string>> tracepoint_formats(
    const std::string& text, const std::optional<std::string>& format_root);

// The files named by a make-style dependency file as clang writes it
// (`-MD -MF FILE`): "target: dep dep \" lines, spaces in names escaped as
// "\ ". The target is left out.
std::vector<std::string> parse_dependency_file(std::string_view text);

}  // namespace tcptrace
