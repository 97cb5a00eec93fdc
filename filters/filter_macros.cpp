#include "filter_macros.h"

namespace tcptrace {
namespace {

void add_port_filter(FilterPlan& plan, const char* which, const char* table,
                     const std::optional<PortSet>& ports) {
  if (!ports) return;
  const std::string prefix = std::string("-DFILTER_") + which;
  if (ports->ranges().size() > kMaxInlinePortRanges) {
    plan.cflags.push_back(prefix + "_MODE=2");
    plan.table_fills.push_back({table, *ports});
    return;
  }
  std::string expression;
  for (const PortRange& r : ports->ranges()) {
    if (!expression.empty()) expression += "||";
    if (r.first == r.last) {
      expression += "(p)==" + std::to_string(r.first);
    } else {
      expression += "((p)>=" + std::to_string(r.first) + "&&(p)<=" + std::to_string(r.last) + ")";
    }
  }
  plan.cflags.push_back(prefix + "_MODE=1");
  plan.cflags.push_back(prefix + "_MATCH(p)=(" + expression + ")");
}

}  // namespace

FilterPlan build_filter_plan(const FilterSpec& spec) {
  FilterPlan plan;
  add_port_filter(plan, "SPORT", "filter_sport_ports", spec.sport);
  add_port_filter(plan, "DPORT", "filter_dport_ports", spec.dport);
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
