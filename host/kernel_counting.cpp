#include "kernel_counting.h"

#include "metrics.h"

namespace tcptrace {
namespace {

// Events per ring buffer wake-up (as TCPTRACE_WAKEUP_EVERY in
// tcptrace_filter.h for programs that write their own submit code).
constexpr int kWakeupEvery = 32;

std::string field_of(const std::string& field) { return "((u64)e->" + field + ")"; }

// Whether metric `m` counts the events of output `table`.
bool counts_table(const MetricDeclaration& m, const std::string& table, size_t output_count) {
  return m.table.empty() ? output_count == 1 : m.table == table;
}

std::string index_expression(const MetricDeclaration& m) {
  std::string index = "0";
  for (const MetricLabel& label : m.labels) {
    if (label.opt_in) continue;  // counted in the host only
    index = "(" + index + ") * " + std::to_string(label_slots(label, 0)) + " + (u32)" + label_slot_expression(label);
  }
  return index;
}

std::string conditions_expression(const MetricDeclaration& m) {
  std::string all = "1";
  for (const MetricCondition& c : m.conditions) all += " && " + condition_expression(c);
  return all;
}

std::string counting_code(const MetricDeclaration& m, size_t index) {
  const std::string map = kernel_map_name(index);
  std::string code = "if (" + conditions_expression(m) + ") { u32 tcptrace_i = " + index_expression(m) + "; ";
  if (m.kind == MetricKind::counter) {
    code += "u64 *tcptrace_c = " + map + ".lookup(&tcptrace_i); if (tcptrace_c) *tcptrace_c += " +
            (m.value_field.empty() ? std::string("1") : field_of(m.value_field)) + "; } ";
    return code;
  }
  const size_t buckets = m.bounds.size() + 1;
  code += "struct " + map + "_value *tcptrace_h = " + map + ".lookup(&tcptrace_i); if (tcptrace_h) { u64 tcptrace_x = " +
          field_of(m.value_field) + "; u32 tcptrace_b = " + bucket_expression(m.bounds, "tcptrace_x") +
          "; if (tcptrace_b < " + std::to_string(buckets) + ") tcptrace_h->words[tcptrace_b] += 1; tcptrace_h->words[" +
          std::to_string(buckets) + "] += tcptrace_x; } } ";
  return code;
}

}  // namespace

std::string kernel_map_name(size_t metric_index) { return "tcptrace_m" + std::to_string(metric_index); }

size_t kernel_entries(const MetricDeclaration& m) {
  size_t entries = 1;
  for (const MetricLabel& label : m.labels) {
    if (!label.opt_in) entries *= label_slots(label, 0);
  }
  return entries;
}

size_t kernel_words(const MetricDeclaration& m) { return m.kind == MetricKind::counter ? 1 : m.bounds.size() + 2; }

std::string label_slot_expression(const MetricLabel& label) {
  const std::string v = field_of(label.field);
  switch (label.domain) {
    case LabelDomain::names: {
      const std::string n = std::to_string(label.names.size());
      return "(" + v + " < " + n + " ? " + v + " : " + n + ")";
    }
    case LabelDomain::tcp_state:
      return "(" + v + " < 16 ? " + v + " : 0)";
    case LabelDomain::family:
      return "((" + v + " == 4 || " + v + " == 2) ? 0 : (" + v + " == 6 || " + v + " == 10) ? 1 : 2)";
    case LabelDomain::small:
    case LabelDomain::folded:
      return "(" + v + " < 256 ? " + v + " : 256)";
  }
  return "0";
}

std::string bucket_expression(const std::vector<uint64_t>& bounds, const std::string& value) {
  // A chain of comparisons, smallest bound first: clang turns it into a few
  // compares and selects, no loop and no map (the verifier sees constants).
  std::string text = "(";
  for (size_t i = 0; i < bounds.size(); ++i) {
    text += value + " <= " + std::to_string(bounds[i]) + "ULL ? " + std::to_string(i) + " : ";
  }
  return text + std::to_string(bounds.size()) + ")";
}

std::string condition_expression(const MetricCondition& c) {
  // C's own comparison of the field's type would convert a negative
  // constant for an unsigned field; the host compares signed fields as
  // int64 and unsigned ones as uint64, and so does this: the type's
  // signedness is a constant clang folds.
  const std::string field = "e->" + c.field;
  const std::string op = " " + std::string(compare_op_text(c.op)) + " ";
  const std::string constant = std::to_string(c.constant) + "LL";
  return "(((__typeof__(" + field + "))-1) < 0 ? ((s64)" + field + op + "(s64)" + constant + ") : ((u64)" + field +
         op + "(u64)" + constant + "))";
}

std::string output_replacement(const OutputDeclaration& output, bool first, OutputVariant variant,
                               size_t ring_buffer_pages, const std::vector<MetricDeclaration>& metrics,
                               size_t output_count) {
  const std::string& table = output.table;
  const std::string signature =
      "static __always_inline int tcptrace_submit_" + table + "(void *ctx, struct " + output.struct_name + " *e)";
  std::string line;
  if (variant == OutputVariant::kernel_counts) {
    // Per-CPU, so no atomics: the host sums the CPUs.
    if (first) {
      line += "BPF_PERCPU_ARRAY(" + std::string(kCountedMap) + ", u64, 1); ";
      for (size_t k = 0; k < metrics.size(); ++k) {
        const MetricDeclaration& m = metrics[k];
        const std::string map = kernel_map_name(k);
        if (m.kind == MetricKind::counter) {
          line += "BPF_PERCPU_ARRAY(" + map + ", u64, " + std::to_string(kernel_entries(m)) + "); ";
        } else {
          line += "struct " + map + "_value { u64 words[" + std::to_string(kernel_words(m)) + "]; }; BPF_PERCPU_ARRAY(" +
                  map + ", struct " + map + "_value, " + std::to_string(kernel_entries(m)) + "); ";
        }
      }
    }
    line += signature + " { u32 tcptrace_zero = 0; u64 *tcptrace_n = " + kCountedMap +
            ".lookup(&tcptrace_zero); if (tcptrace_n) *tcptrace_n += 1; ";
    for (size_t k = 0; k < metrics.size(); ++k) {
      if (counts_table(metrics[k], table, output_count)) line += counting_code(metrics[k], k);
    }
    return line + "return 0; }";
  }
  // A full buffer of either kind drops the event, and every submit that
  // fails is counted in tcptrace_lost, which the host reports as lost
  // events: a perf buffer's own record of its losses reaches the reader only
  // once a later sample fits (perf_output_begin() writes it ahead of the
  // next record), so losses before a quiet period or exit would go
  // unreported otherwise.
  if (first) line += "BPF_PERCPU_ARRAY(tcptrace_lost, u64, 1); ";
  const std::string count_loss =
      "u64 *tcptrace_lost_n = tcptrace_lost.lookup(&tcptrace_zero); if (tcptrace_lost_n) *tcptrace_lost_n += 1; "
      "return -1; }";
  if (variant == OutputVariant::ring_buffer) {
    // Wake-up batching: the reader is woken for every kWakeupEvery-th event
    // of a CPU (BPF_RB_FORCE_WAKEUP) and not for the others
    // (BPF_RB_NO_WAKEUP); it polls every 100 ms anyway, which bounds the wait.
    if (first) line += "BPF_PERCPU_ARRAY(tcptrace_unannounced, u32, 1); ";
    line += "BPF_RINGBUF_OUTPUT(" + table + ", " + std::to_string(ring_buffer_pages) + "); ";
    line += signature +
            " { u32 tcptrace_zero = 0; u64 tcptrace_flags = BPF_RB_NO_WAKEUP; u32 *tcptrace_u = "
            "tcptrace_unannounced.lookup(&tcptrace_zero); if (tcptrace_u && ++*tcptrace_u >= " +
            std::to_string(kWakeupEvery) + ") { *tcptrace_u = 0; tcptrace_flags = BPF_RB_FORCE_WAKEUP; } if (" +
            table + ".ringbuf_output(e, sizeof(*e), tcptrace_flags) == 0) return 0; " + count_loss;
    return line;
  }
  line += "BPF_PERF_OUTPUT(" + table + "); ";
  line += signature + " { u32 tcptrace_zero = 0; if (" + table + ".perf_submit(ctx, e, sizeof(*e)) == 0) return 0; " +
          count_loss;
  return line;
}

std::string replace_output_lines(const std::string& source, const ProgramDeclarations& declarations,
                                 OutputVariant variant, size_t ring_buffer_pages) {
  if (declarations.outputs.empty()) return source;
  std::string text;
  size_t line_number = 1;
  size_t start = 0;
  bool first = true;
  while (start <= source.size()) {
    size_t end = source.find('\n', start);
    const bool last = end == std::string::npos;
    if (last) end = source.size();
    const OutputDeclaration* output = nullptr;
    for (const OutputDeclaration& o : declarations.outputs) {
      if (o.line == line_number) output = &o;
    }
    if (output != nullptr) {
      text += output_replacement(*output, first, variant, ring_buffer_pages, declarations.metrics,
                                 declarations.outputs.size());
      first = false;
    } else {
      text.append(source, start, end - start);
    }
    if (last) break;
    text.push_back('\n');
    start = end + 1;
    ++line_number;
  }
  return text;
}

uint64_t KernelCountFeed::feed(const KernelCountSnapshot& now, Metrics& sink) {
  std::vector<double> buckets;
  for (size_t k = 0; k < metrics_.size() && k < now.metrics.size(); ++k) {
    const MetricDeclaration& m = metrics_[k];
    const std::vector<uint64_t>& counts = now.metrics[k];
    const size_t words = kernel_words(m);
    if (counts.size() != kernel_entries(m) * words) continue;
    const std::vector<uint64_t>* before = k < seen_.metrics.size() && seen_.metrics[k].size() == counts.size()
                                              ? &seen_.metrics[k]
                                              : nullptr;
    const auto grew = [&](size_t i) {
      const uint64_t was = before ? (*before)[i] : 0;
      return counts[i] >= was ? counts[i] - was : 0;
    };
    for (size_t entry = 0; entry < kernel_entries(m); ++entry) {
      const size_t base = entry * words;
      if (m.kind == MetricKind::counter) {
        if (const uint64_t n = grew(base); n > 0) sink.add_kernel_counter(k, entry, n);
        continue;
      }
      double observations = 0;
      buckets.assign(words - 1, 0);
      for (size_t b = 0; b + 1 < words; ++b) {
        buckets[b] = static_cast<double>(grew(base + b));
        observations += buckets[b];
      }
      if (observations == 0) continue;
      sink.add_kernel_histogram(k, entry, buckets,
                                static_cast<double>(grew(base + words - 1)) / static_cast<double>(m.unit_divisor));
    }
  }
  const uint64_t events = now.counted >= seen_.counted ? now.counted - seen_.counted : 0;
  seen_ = now;
  if (events > 0) sink.add_events(events);
  return events;
}

}  // namespace tcptrace
