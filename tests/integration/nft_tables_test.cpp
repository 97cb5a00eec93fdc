// The sweep of nftables tables left by test processes that are gone
// (nft_tables.h), against real tables.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "nft_tables.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

bool add_table(const std::string& table) {
  return std::system(("nft add table inet " + table).c_str()) == 0;
}

// There may be no such table, so the status says nothing.
void delete_table(const std::string& table) {
  if (std::system(("nft delete table inet " + table + " 2>/dev/null").c_str()) != 0) return;
}

// A pid no process has any more: a child that exited and was reaped.
pid_t gone_pid() {
  const pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  return child;
}

TEST(NftTables, TablesOfGoneTestProcessesAreRemoved) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  // A test process still running: a child of this one, so it has the same
  // comm.
  int hold[2];
  ASSERT_EQ(pipe(hold), 0);
  const pid_t live = fork();
  if (live == 0) {
    close(hold[1]);
    char byte;
    (void)!read(hold[0], &byte, 1);
    _exit(0);
  }
  close(hold[0]);
  const std::string prefix(kNftTablePrefix);
  const std::string of_gone = prefix + std::to_string(gone_pid());
  // pid 1 is alive but not a test process: its pid was reused.
  const std::string of_reused = prefix + "1";
  const std::string of_live = prefix + std::to_string(live);
  const std::string own = nft_test_table();
  const std::string other = "tcptrace_other_" + std::to_string(gone_pid());
  for (const std::string& table : {of_gone, of_reused, of_live, own, other}) {
    ASSERT_TRUE(add_table(table)) << table;
  }

  std::vector<std::string> removed = remove_stale_nft_tables();
  std::sort(removed.begin(), removed.end());
  std::vector<std::string> stale = {of_gone, of_reused};
  std::sort(stale.begin(), stale.end());
  EXPECT_EQ(removed, stale);
  EXPECT_FALSE(nft_table_exists(of_gone));
  EXPECT_FALSE(nft_table_exists(of_reused));
  EXPECT_TRUE(nft_table_exists(of_live)) << "another test process's table";
  EXPECT_TRUE(nft_table_exists(own));
  EXPECT_TRUE(nft_table_exists(other)) << "not a test table";

  for (const std::string& table : {of_gone, of_reused, of_live, own, other}) delete_table(table);
  close(hold[1]);
  waitpid(live, nullptr, 0);
}

}  // namespace
}  // namespace tcptrace::testing
