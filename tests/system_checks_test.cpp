// The reason added to a refused perf_event_open(): only for EACCES at a
// perf_event_paranoid level above 2 without CAP_SYS_ADMIN, where Debian's
// and Ubuntu's kernels refuse every caller lacking it.
#include <gtest/gtest.h>

#include <cerrno>

#include "system_checks.h"

namespace tcptrace {
namespace {

TEST(PerfEventRefusal, NamesTheSysctlAndBothWaysOutAtDebiansLevel) {
  EXPECT_EQ(perf_event_refusal_reason(EACCES, 3, false),
            "kernel.perf_event_paranoid is 3, a level at which Debian and Ubuntu kernels allow perf_event_open() "
            "only with CAP_SYS_ADMIN (CAP_PERFMON is not enough): grant CAP_SYS_ADMIN, or set "
            "kernel.perf_event_paranoid=2");
  EXPECT_NE(perf_event_refusal_reason(EACCES, 4, false).find("perf_event_paranoid is 4"), std::string::npos);
}

TEST(PerfEventRefusal, SaysNothingWhereTheLevelIsNotTheCause) {
  EXPECT_EQ(perf_event_refusal_reason(EACCES, 2, false), "");   // mainline's levels
  EXPECT_EQ(perf_event_refusal_reason(EACCES, 3, true), "");    // CAP_SYS_ADMIN passes the check
  EXPECT_EQ(perf_event_refusal_reason(EPERM, 3, false), "");    // another check refused it
  EXPECT_EQ(perf_event_refusal_reason(ENOENT, 3, false), "");
}

}  // namespace
}  // namespace tcptrace
