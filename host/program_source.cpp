#include "program_source.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tcptrace {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kSuffix = ".bpf.c";

fs::path executable_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

bool has_filter_header(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "tcptrace_filter.h", ec);
}

}  // namespace

Result<ProgramLocations> find_program_locations(const std::optional<std::string>& programs_dir_option) {
  std::vector<ProgramLocations> candidates;
  const fs::path exe_dir = executable_dir();
  if (!exe_dir.empty()) {
    const fs::path share = exe_dir.parent_path() / "share/tcptrace-bcc";
    candidates.push_back({(share / "programs").string(), (share / "include").string()});
  }
#ifdef TCPTRACE_SOURCE_DIR
  const fs::path source = TCPTRACE_SOURCE_DIR;
  candidates.push_back({(source / "programs").string(), (source / "filters").string()});
#endif
  for (const auto& candidate : candidates) {
    if (!has_filter_header(candidate.include_dir)) continue;
    ProgramLocations found = candidate;
    if (programs_dir_option) found.programs_dir = *programs_dir_option;
    std::error_code ec;
    if (!fs::is_directory(found.programs_dir, ec)) {
      return usage_error("--programs-dir: '" + found.programs_dir + "' is not a directory");
    }
    return found;
  }
  return runtime_error("cannot find the installed programs and tcptrace_filter.h (looked in " +
                       (candidates.empty() ? std::string("nothing") : candidates.front().include_dir) +
                       "); reinstall tcptrace-bcc");
}

std::vector<std::string> list_programs(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (file.size() > kSuffix.size() && file.compare(file.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
      names.push_back(file.substr(0, file.size() - kSuffix.size()));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

Result<ProgramSource> read_named_program(const ProgramLocations& where, const std::string& name) {
  const std::vector<std::string> known = list_programs(where.programs_dir);
  if (std::find(known.begin(), known.end(), name) == known.end()) {
    std::string list;
    for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
    return usage_error("--program: unknown program '" + name + "' (known: " + (list.empty() ? "none" : list) +
                       ")");
  }
  ProgramSource source;
  source.path = (fs::path(where.programs_dir) / (name + std::string(kSuffix))).string();
  std::ifstream file(source.path, std::ios::binary);
  if (!file) return runtime_error("cannot read " + source.path);
  std::ostringstream text;
  text << file.rdbuf();
  source.text = text.str();
  if (source.text.empty()) return runtime_error(source.path + " is empty");
  return source;
}

}  // namespace tcptrace
