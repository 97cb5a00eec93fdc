// Where the BPF program sources and the BPF-side headers are found.
//
// Installed: <prefix>/share/tcptrace-bcc/{programs,include} next to
// <prefix>/sbin/tcptrace-bcc (or <prefix>/bin). In a build tree: the source
// tree's programs/ and filters/, so an edited program runs at once without a
// rebuild.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "result.h"

namespace tcptrace {

struct ProgramLocations {
  std::string programs_dir;
  std::string include_dir;  // holds tcptrace_filter.h
};

// Installed copies look only beside themselves; the source tree's programs/
// and filters/ are used only by a binary whose own path (/proc/self/exe) is
// inside the build directory it was built in (TCPTRACE_BINARY_DIR).
// Directories and headers are checked as trusted_file.h says.
Result<ProgramLocations> find_program_locations(const std::optional<std::string>& programs_dir_option);

// True when `exe` lies inside `build_dir` (both resolved).
bool running_from_build_tree(const std::string& exe, const std::string& build_dir);

// NAME.bpf.c files in `dir`, names without the suffix, sorted.
std::vector<std::string> list_programs(const std::string& dir);

struct ProgramSource {
  std::string name;  // NAME for NAME.bpf.c
  std::string path;
  std::string text;
};

// Reads programs_dir/NAME.bpf.c; an unknown name lists the known ones.
Result<ProgramSource> read_named_program(const ProgramLocations& where, const std::string& name);

// Reads any program file (--program-file), as trusted_file.h says: at most
// kMaxProgramFileBytes of a regular file, no final symbolic link, and as root
// only a file and directories no other user may write. A missing file, a
// link, a directory, a FIFO or device, an empty or too large file is a usage
// error; an unreadable or untrusted one a runtime error.
Result<ProgramSource> read_program_file(const std::string& path);

// The first line of a program's leading comment, without "NAME: ", for --list.
std::string program_summary(const std::string& text);

}  // namespace tcptrace
