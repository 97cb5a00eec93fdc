#include "filter_macros.h"

namespace tcptrace {
namespace {

void add_port_filter(FilterPlan& plan, const char* which, const std::optional<PortSet>& ports) {
  if (!ports) return;
  std::string cases;
  for (const PortRange& r : ports->ranges()) {
    cases += "case " + std::to_string(r.first);
    if (r.last != r.first) cases += " ... " + std::to_string(r.last);
    cases += ": ";
  }
  const std::string prefix = std::string("-DFILTER_") + which;
  plan.cflags.push_back(prefix + "_MODE=1");
  plan.cflags.push_back(prefix + "_CASES=" + cases);
}

}  // namespace

FilterPlan build_filter_plan(const FilterSpec& spec) {
  FilterPlan plan;
  add_port_filter(plan, "SPORT", spec.sport);
  add_port_filter(plan, "DPORT", spec.dport);
  if (spec.family != 0) plan.cflags.push_back("-DFILTER_FAMILY=" + std::to_string(spec.family));
  if (spec.pid) plan.cflags.push_back("-DFILTER_PID=" + std::to_string(*spec.pid));
  if (spec.min_us) plan.cflags.push_back("-DFILTER_MIN_US=" + std::to_string(*spec.min_us) + "ULL");
  if (spec.no_failures) plan.cflags.push_back("-DFILTER_NO_FAILURES=1");
  return plan;
}

bool is_reserved_macro_name(const std::string& name) {
  return name.rfind("FILTER_", 0) == 0 || name.rfind("TCPTRACE_", 0) == 0;
}

}  // namespace tcptrace
