// The Dockerfile, parsed: two stages, the first building the Debian package
// and the second debian:bookworm-slim with that package alone (no sources,
// no compiler, no test servers), whose entrypoint is the packaged tool that
// deploy/daemonset.yaml passes its arguments to. No container engine needed:
// whether the image builds is measured by hand (docs/testing.md, "Image").
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tcptrace {
namespace {

// One instruction: its keyword in capitals and the rest, continuation lines
// joined (a trailing backslash) and comment lines dropped, as Docker does.
struct Instruction {
  std::string keyword;
  std::string arguments;
};

struct Stage {
  std::string image;  // FROM's image
  std::string name;   // FROM ... AS name, or empty
  std::vector<Instruction> instructions;
};

std::string trim(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(" \t") - begin + 1);
}

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::vector<Instruction> parse_instructions(std::istream& in) {
  std::vector<Instruction> out;
  std::string pending;
  for (std::string line; std::getline(in, line);) {
    const std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    if (t.back() == '\\') {
      pending += t.substr(0, t.size() - 1) + " ";
      continue;
    }
    pending += t;
    const size_t space = pending.find_first_of(" \t");
    Instruction i{pending.substr(0, space), space == std::string::npos ? "" : trim(pending.substr(space))};
    for (char& c : i.keyword) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
    out.push_back(i);
    pending.clear();
  }
  EXPECT_EQ(pending, "") << "the Dockerfile ends inside a continued line";
  return out;
}

std::vector<Stage> stages() {
  std::ifstream file(std::string(TCPTRACE_SOURCE_DIR) + "/Dockerfile");
  EXPECT_TRUE(file.is_open()) << "no Dockerfile";
  std::vector<Stage> out;
  for (const Instruction& i : parse_instructions(file)) {
    if (i.keyword == "FROM") {
      const std::vector<std::string> w = words(i.arguments);
      Stage s;
      s.image = w.empty() ? "" : w[0];
      if (w.size() == 3 && (w[1] == "AS" || w[1] == "as")) s.name = w[2];
      EXPECT_TRUE(w.size() == 1 || w.size() == 3) << "FROM " << i.arguments;
      out.push_back(s);
    } else {
      EXPECT_FALSE(out.empty()) << i.keyword << " before the first FROM";
      if (!out.empty()) out.back().instructions.push_back(i);
    }
  }
  return out;
}

// Every word after `apt-get install` up to the end of that command.
std::vector<std::vector<std::string>> apt_installs(const std::string& run) {
  std::vector<std::vector<std::string>> out;
  const std::vector<std::string> w = words(run);
  for (size_t i = 0; i + 1 < w.size(); ++i) {
    if (w[i] != "apt-get" || w[i + 1] != "install") continue;
    std::vector<std::string> arguments;
    for (size_t j = i + 2; j < w.size() && w[j] != "&&" && w[j] != ";" && w[j] != "||"; ++j) {
      arguments.push_back(w[j]);
    }
    out.push_back(arguments);
  }
  return out;
}

TEST(Dockerfile, BuildsThePackageThenInstallsItOnBookwormSlim) {
  const std::vector<Stage> s = stages();
  ASSERT_EQ(s.size(), 2u) << "two stages: the package, then the image";
  EXPECT_EQ(s[0].image, "debian:bookworm");
  ASSERT_FALSE(s[0].name.empty()) << "the first stage is named, for COPY --from";
  EXPECT_EQ(s[1].image, "debian:bookworm-slim");

  std::string build_runs;
  for (const Instruction& i : s[0].instructions) {
    if (i.keyword == "RUN") build_runs += i.arguments + "\n";
  }
  EXPECT_NE(build_runs.find("scripts/package"), std::string::npos) << "the first stage runs scripts/package";

  // The final stage takes the .deb from the first stage and nothing else:
  // no ADD, no COPY of the build context (the sources).
  std::string deb;
  for (const Instruction& i : s[1].instructions) {
    EXPECT_NE(i.keyword, "ADD");
    if (i.keyword != "COPY") continue;
    const std::vector<std::string> w = words(i.arguments);
    ASSERT_EQ(w.size(), 3u) << "COPY " << i.arguments;
    EXPECT_EQ(w[0], "--from=" + s[0].name) << "the final stage copies only from the package stage";
    EXPECT_EQ(w[1].substr(w[1].size() - 4), ".deb");
    EXPECT_NE(build_runs.find(w[1]), std::string::npos) << w[1] << ": the first stage does not make it";
    deb = w[2];
  }
  ASSERT_FALSE(deb.empty()) << "the final stage copies no .deb";

  // apt installs that .deb and what it Depends on, nothing named besides:
  // no compiler, no -dev package, no test server; and no Recommends (the
  // kernel headers are the host's).
  int installs = 0;
  for (const Instruction& i : s[1].instructions) {
    if (i.keyword != "RUN") continue;
    for (const std::vector<std::string>& arguments : apt_installs(i.arguments)) {
      ++installs;
      EXPECT_EQ(std::set<std::string>(arguments.begin(), arguments.end()),
                (std::set<std::string>{"-y", "--no-install-recommends", deb}))
          << "RUN " << i.arguments;
    }
    EXPECT_NE(i.arguments.find("rm -rf /var/lib/apt/lists/*"), std::string::npos)
        << "the package lists stay out of the image";
  }
  EXPECT_EQ(installs, 1);
}

// deploy/daemonset.yaml gives args only, so the entrypoint is what runs:
// the tool where the package installs it, in exec form (no shell between
// the container's signals and the tool).
TEST(Dockerfile, EntrypointIsTheInstalledTool) {
  const std::vector<Stage> s = stages();
  ASSERT_FALSE(s.empty());
  std::vector<std::string> entrypoints;
  for (const Instruction& i : s.back().instructions) {
    EXPECT_NE(i.keyword, "CMD") << "arguments come from docker run or the DaemonSet";
    if (i.keyword == "ENTRYPOINT") entrypoints.push_back(i.arguments);
  }
  ASSERT_EQ(entrypoints.size(), 1u);
  const nlohmann::json exec_form = nlohmann::json::parse(entrypoints[0], nullptr, false);
  EXPECT_EQ(exec_form, nlohmann::json::array({"/usr/sbin/tcptrace-bcc"})) << entrypoints[0];
}

}  // namespace
}  // namespace tcptrace
