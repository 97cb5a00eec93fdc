// nftables tables of the integration tests. Each test process uses one
// table, named kNftTablePrefix + its pid, so a table whose process died
// without removing it (a crash, ctest's TIMEOUT) is recognised as stale: a
// gtest global environment removes stale tables when a test process starts
// and its own table and stale ones when it ends.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tcptrace::testing {

inline constexpr std::string_view kNftTablePrefix = "tcptrace_test_";

// This process's table: kNftTablePrefix + getpid().
std::string nft_test_table();

bool nft_table_exists(const std::string& table);

// Deletes every inet table named kNftTablePrefix + PID whose PID is not a
// live process with this process's comm (gone, or reused by another
// program). Returns the tables deleted.
std::vector<std::string> remove_stale_nft_tables();

// This process's table with one rule for SYNs to `port` (nft syntax
// `action`, e.g. "drop"); removed in the destructor, so also when the test
// fails.
class SynRule {
 public:
  SynRule(uint16_t port, const std::string& action);
  ~SynRule();
  SynRule(const SynRule&) = delete;
  SynRule& operator=(const SynRule&) = delete;
  bool ok() const { return ok_; }
  const std::string& table() const { return table_; }

 private:
  std::string table_;
  bool ok_ = false;
};

}  // namespace tcptrace::testing
