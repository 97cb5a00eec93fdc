// The compiler module's entry points: the part of the host that runs BCC's
// clang passes and LLVM's code generation. It is a shared object of its own
// (tcptrace-bcc-compiler.so, the only code that links libbcc), loaded with
// dlopen only when a program must be compiled: a start that loads a cached
// object (compile_cache.h) never maps libLLVM or libclang-cpp, whose ~52 MB
// of code and static constructors would otherwise run before main().
// Everything after the compile (loading objects, attaching, buffers, map
// reads) uses libbcc_bpf and libbpf, which bcc_backend.h wraps.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bcc_backend.h"
#include "result.h"

namespace tcptrace::bcc {

struct CompileRequest {
  const std::string& source;
  const std::vector<std::string>& cflags;
  // A merged header tree handed to BCC as BCC_KERNEL_SOURCE; without it BCC
  // finds the running kernel's headers itself.
  const std::optional<std::string>& kernel_source_dir;
  // What BCC reads as /proc/kallsyms while it compiles (kallsyms_view.h).
  const std::string& kallsyms_text;
};

// The module and the binary that loads it are built together; the version
// guards against a module from another build left in the module directory.
inline constexpr uint32_t kCompilerInterfaceVersion = 1;

struct CompilerEntryPoints {
  uint32_t interface_version;
  // Compiles C text with BCC's clang. Whatever clang and BCC printed (errors
  // and warnings, with the program as /virtual/main.c) lands in
  // `diagnostics`, on success and on failure.
  Result<std::unique_ptr<Program>> (*compile)(const CompileRequest& request, std::string& diagnostics);
  // tracepoint_struct_lines() as bcc_backend.h describes it.
  size_t (*tracepoint_struct_lines)(const std::string& category, const std::string& event);
  // Returns LLVM/clang memory to the system once everything is loaded.
  void (*release_memory)();
};

}  // namespace tcptrace::bcc

// The module's one exported symbol.
extern "C" const tcptrace::bcc::CompilerEntryPoints* tcptrace_bcc_compiler_entry_points();
