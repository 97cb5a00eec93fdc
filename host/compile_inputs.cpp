#include "compile_inputs.h"

#include <fstream>
#include <sstream>

#include "compile_cache.h"
#include "diagnostics_map.h"

namespace tcptrace {

std::string compile_cache_key(const CompileInputs& inputs) {
  CacheKey key;
  key.add("format", std::to_string(kCacheFormatVersion));
  key.add("source path", inputs.source_path);
  key.add("text", inputs.text);
  for (const std::string& flag : inputs.cflags) key.add("cflag", flag);
  key.add("tool", inputs.tool_version);
  key.add("bcc", inputs.bcc_version);
  key.add("compiler module", inputs.compiler_module);
  key.add("kernel release", inputs.kernel_release);
  key.add("kernel build", inputs.kernel_build);
  key.add("machine", inputs.machine);
  key.add("possible cpus", inputs.possible_cpus);
  key.add("headers", inputs.headers);
  for (const auto& [tracepoint, format] : inputs.tracepoint_formats) {
    key.add("tracepoint", tracepoint);
    key.add("tracepoint format", format);
  }
  return key.hex();
}

namespace {

void describe_tree(std::string& text, const HeaderTree& tree) {
  text += "tree " + tree.release + " build " + tree.build_dir + " source " + tree.source_dir + "\n";
}

std::string read_whole_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

std::string describe_header_trees(const HeaderChoice& choice) {
  std::string text = "match " + std::to_string(static_cast<int>(choice.match)) + "\n";
  if (choice.tree) describe_tree(text, *choice.tree);
  for (const HeaderTree& tree : choice.alternatives) describe_tree(text, tree);
  if (!choice.kheaders_archive.empty()) {
    // The unpacked tree is private to each run; the archive (the kernel's
    // own, /sys/kernel/kheaders.tar.xz) is what it holds.
    const FileIdentity archive = identify_file(choice.kheaders_archive);
    text += "kheaders " + archive.path + " " + std::to_string(archive.size) + " " +
            std::to_string(archive.mtime_ns) + "\n";
  }
  return text;
}

std::vector<std::pair<std::string, std::string>> tracepoint_formats(
    const std::string& text, const std::optional<std::string>& format_root) {
  std::vector<std::pair<std::string, std::string>> formats;
  for (const TracepointProbeLine& probe : tracepoint_probe_lines(text)) {
    const std::string relative = "/events/" + probe.category + "/" + probe.event + "/format";
    std::string format;
    if (format_root) {
      format = read_whole_file(*format_root + relative);
    } else {
      for (const char* root : {"/sys/kernel/debug/tracing", "/sys/kernel/tracing"}) {
        format = read_whole_file(root + relative);
        if (!format.empty()) break;
      }
    }
    formats.emplace_back(probe.category + ":" + probe.event, std::move(format));
  }
  return formats;
}

std::vector<std::string> parse_dependency_file(std::string_view text) {
  std::vector<std::string> files;
  std::string word;
  bool target_done = false;
  const auto finish_word = [&] {
    if (word.empty()) return;
    if (!target_done && word.back() == ':') {
      target_done = true;
    } else if (target_done) {
      files.push_back(word);
    }
    word.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\\' && i + 1 < text.size() && (text[i + 1] == '\n' || text[i + 1] == '\r')) {
      finish_word();  // a continuation line
      ++i;
    } else if (c == '\\' && i + 1 < text.size() && (text[i + 1] == ' ' || text[i + 1] == '#')) {
      word.push_back(text[++i]);
    } else if (c == '$' && i + 1 < text.size() && text[i + 1] == '$') {
      word.push_back(text[++i]);
    } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      finish_word();
    } else {
      word.push_back(c);
    }
  }
  finish_word();
  return files;
}

}  // namespace tcptrace
