#include "nft_tables.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "tool_process.h"

namespace tcptrace::testing {

std::string nft_test_table() { return std::string(kNftTablePrefix) + std::to_string(getpid()); }

bool nft_table_exists(const std::string& table) {
  return std::system(("nft list table inet " + table + " >/dev/null 2>&1").c_str()) == 0;
}

namespace {

// Names of the inet tables (`nft list tables` prints "table inet NAME").
std::vector<std::string> inet_tables() {
  std::vector<std::string> names;
  FILE* listing = popen("nft list tables inet 2>/dev/null", "r");
  if (listing == nullptr) return names;
  char line[512];
  while (std::fgets(line, sizeof line, listing) != nullptr) {
    std::istringstream words(line);
    std::string table, family, name;
    if (words >> table >> family >> name && table == "table" && family == "inet") names.push_back(name);
  }
  pclose(listing);
  return names;
}

// The pid in a test table's name, 0 if the name is not one.
pid_t owner_of(const std::string& table) {
  if (table.rfind(kNftTablePrefix, 0) != 0) return 0;
  const std::string digits = table.substr(kNftTablePrefix.size());
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) return 0;
  return static_cast<pid_t>(std::stol(digits));
}

std::string comm_of(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(file, comm);
  return comm;
}

bool delete_table(const std::string& table) {
  return std::system(("nft delete table inet " + table + " 2>/dev/null").c_str()) == 0;
}

// Removes stale tables before the tests of this process and its own table
// (and stale ones) after them. Needs root and nft; without them there is
// nothing to remove.
class NftTablesEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { sweep(); }
  void TearDown() override {
    if (usable() && nft_table_exists(nft_test_table())) delete_table(nft_test_table());
    sweep();
  }

 private:
  static bool usable() { return geteuid() == 0 && std::system("command -v nft >/dev/null 2>&1") == 0; }
  static void sweep() {
    if (!usable()) return;
    for (const std::string& table : remove_stale_nft_tables()) {
      std::cerr << "[   INFO   ] removed the nftables table " << table << " of a test process that is gone"
                << std::endl;
    }
  }
};

[[maybe_unused]] const ::testing::Environment* const kNftTablesEnvironment =
    ::testing::AddGlobalTestEnvironment(new NftTablesEnvironment);

}  // namespace

std::vector<std::string> remove_stale_nft_tables() {
  std::vector<std::string> removed;
  const std::string own = own_comm();
  for (const std::string& table : inet_tables()) {
    const pid_t pid = owner_of(table);
    if (pid <= 0 || pid == getpid()) continue;
    const bool alive = kill(pid, 0) == 0 || errno == EPERM;
    if (alive && comm_of(pid) == own) continue;  // another test process's
    if (delete_table(table)) removed.push_back(table);
  }
  return removed;
}

SynRule::SynRule(uint16_t port, const std::string& action) : table_(nft_test_table()) {
  const std::string rules = "table inet " + table_ +
                            " {\n chain input {\n  type filter hook input priority 0; policy accept;\n"
                            "  tcp dport " + std::to_string(port) + " tcp flags & (syn | ack) == syn " + action +
                            "\n }\n}";
  ok_ = std::system(("nft -f - <<'EOF'\n" + rules + "\nEOF").c_str()) == 0;
}

SynRule::~SynRule() { delete_table(table_); }

}  // namespace tcptrace::testing
