// Where the BPF program sources and the BPF-side headers are found.
//
// Installed: <prefix>/share/tcptrace-bcc/{programs,include} next to
// <prefix>/bin/tcptrace-bcc. In a build tree: the source tree's programs/
// and filters/, so an edited program runs at once without a rebuild.
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

Result<ProgramLocations> find_program_locations(const std::optional<std::string>& programs_dir_option);

// NAME.bpf.c files in `dir`, names without the suffix, sorted.
std::vector<std::string> list_programs(const std::string& dir);

struct ProgramSource {
  std::string name;  // NAME for NAME.bpf.c
  std::string path;
  std::string text;
};

// Reads programs_dir/NAME.bpf.c; an unknown name lists the known ones.
Result<ProgramSource> read_named_program(const ProgramLocations& where, const std::string& name);

// Reads any program file (--program-file). A missing file, a directory or an
// empty file is a usage error; an unreadable one a runtime error.
Result<ProgramSource> read_program_file(const std::string& path);

// The first line of a program's leading comment, without "NAME: ", for --list.
std::string program_summary(const std::string& text);

}  // namespace tcptrace
