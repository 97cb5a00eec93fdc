#include "program_source.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "trusted_file.h"

namespace tcptrace {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kSuffix = ".bpf.c";

fs::path executable_path() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe;
}

bool has_filter_header(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / "tcptrace_filter.h", ec);
}

// True when `path` is `dir` or below it; both are resolved first.
bool is_inside(const fs::path& path, const fs::path& dir) {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(path, ec);
  if (ec) return false;
  fs::path d = fs::weakly_canonical(dir, ec);
  if (ec) return false;
  if (!d.has_filename()) d = d.parent_path();  // "build/" is "build"
  auto [d_end, p_at] = std::mismatch(d.begin(), d.end(), p.begin(), p.end());
  return d_end == d.end();
}

// The include directory BCC's clang reads headers from, as a program file:
// every entry trusted, none a symbolic link that could lead elsewhere.
Status check_include_directory(const std::string& dir, const FileTrust& trust) {
  if (Status s = check_trusted_directory("include directory", dir, trust); !s) return s;
  if (!trust.check_owners) return {};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string path = entry.path().string();
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) continue;  // gone meanwhile
    if (S_ISLNK(st.st_mode)) {
      return runtime_error("include directory: '" + path + "' is a symbolic link; refusing it as root");
    }
    if (std::string reason = untrusted_reason(path, st, trust); !reason.empty()) {
      return runtime_error("include directory: " + reason);
    }
  }
  return {};
}

}  // namespace

bool running_from_build_tree(const std::string& exe, const std::string& build_dir) {
  return !exe.empty() && !build_dir.empty() && is_inside(exe, build_dir);
}

Result<ProgramLocations> find_program_locations(const std::optional<std::string>& programs_dir_option) {
  std::vector<ProgramLocations> candidates;
  const fs::path exe = executable_path();
  if (!exe.empty()) {
    const fs::path share = exe.parent_path().parent_path() / "share/tcptrace-bcc";
    candidates.push_back({(share / "programs").string(), (share / "include").string()});
  }
#if defined(TCPTRACE_SOURCE_DIR) && defined(TCPTRACE_BINARY_DIR)
  // Only a binary inside the build tree it was built in reads the source
  // tree: an installed copy must never pick up programs from wherever it was
  // built.
  if (running_from_build_tree(exe.string(), TCPTRACE_BINARY_DIR)) {
    const fs::path source = TCPTRACE_SOURCE_DIR;
    candidates.push_back({(source / "programs").string(), (source / "filters").string()});
  }
#endif
  const FileTrust trust = file_trust_for_this_process();
  for (const auto& candidate : candidates) {
    if (!has_filter_header(candidate.include_dir)) continue;
    ProgramLocations found = candidate;
    if (programs_dir_option) found.programs_dir = *programs_dir_option;
    std::error_code ec;
    if (!fs::is_directory(found.programs_dir, ec)) {
      return usage_error("--programs-dir: '" + found.programs_dir + "' is not a directory");
    }
    if (Status s = check_trusted_directory(programs_dir_option ? "--programs-dir" : "programs directory",
                                           found.programs_dir, trust);
        !s) {
      return std::move(s).take_error();
    }
    if (Status s = check_include_directory(found.include_dir, trust); !s) return std::move(s).take_error();
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
  return read_program_file((fs::path(where.programs_dir) / (name + std::string(kSuffix))).string());
}

Result<ProgramSource> read_program_file(const std::string& path) {
  auto text = read_trusted_file("--program-file", path, kMaxProgramFileBytes, file_trust_for_this_process());
  if (!text) return std::move(text).take_error();
  ProgramSource source;
  source.path = path;
  source.text = std::move(text).value();
  if (source.text.empty()) return usage_error("--program-file: '" + path + "' is empty");
  std::string file_name = fs::path(path).filename().string();
  if (file_name.size() > kSuffix.size() &&
      file_name.compare(file_name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
    file_name.resize(file_name.size() - kSuffix.size());
  } else if (const size_t dot = file_name.find('.'); dot != std::string::npos && dot > 0) {
    file_name.resize(dot);
  }
  source.name = file_name;
  return source;
}

std::string program_summary(const std::string& text) {
  const size_t open = text.find("/*");
  const size_t line_comment = text.find("//");
  size_t start = std::min(open, line_comment);
  if (start == std::string::npos) return "";
  start += 2;
  size_t end = text.find('\n', start);
  std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
  if (const size_t close = line.find("*/"); close != std::string::npos) line.resize(close);
  while (!line.empty() && (line.front() == ' ' || line.front() == '*')) line.erase(0, 1);
  while (!line.empty() && line.back() == ' ') line.pop_back();
  // "states: every TCP state change" -> "every TCP state change"
  if (const size_t colon = line.find(": "); colon != std::string::npos && line.find(' ') > colon) {
    line.erase(0, colon + 2);
  }
  return line;
}

}  // namespace tcptrace
