#include "table_output.h"

#include <cstdio>

namespace tcptrace {

std::unique_ptr<TableOutput> start_table_output(const LoadedProgram& loaded, const Options& options,
                                                StdoutWriter& writer, TableMetrics* metrics, const WallClock& clock,
                                                double now_seconds) {
  if (loaded.data_tables.empty()) return nullptr;
  TableOutput::Config config;
  config.interval_seconds = options.interval_seconds;
  config.accumulate = options.accumulate;
  config.mode = options.output == Options::Output::text   ? TableTextMode::text
                : options.output == Options::Output::none ? TableTextMode::none
                                                          : TableTextMode::json;
  config.program_path = loaded.plan.source.path;
  TableMapReader reader = [&loaded](size_t table, bool clear) {
    const TableSpec& spec = loaded.data_tables.at(table).spec();
    return bcc::read_map(loaded.data_table_fds.at(table).get(), spec.kind, spec.key_size, spec.value_size,
                         spec.max_entries, clear);
  };
  return std::make_unique<TableOutput>(loaded.data_tables, std::move(reader), std::move(config), writer.buffer(),
                                       metrics, clock, now_seconds);
}

std::string describe_tables(const LoadedProgram& loaded, const Options& options) {
  if (loaded.data_tables.empty()) return "";
  std::string names;
  for (const TableView& view : loaded.data_tables) {
    const TableSpec& spec = view.spec();
    names += (names.empty() ? "" : ", ") + spec.name + " (" +
             (spec.shape == TableShape::histogram ? "log2 histogram" : "counts") +
             (clears_after_read(spec, options.accumulate) ? ", cleared after each print" : "") + ")";
  }
  char every[48] = "at the end";
  if (options.interval_seconds) std::snprintf(every, sizeof every, "every %g s and at the end", *options.interval_seconds);
  const std::string when = every;
  return "tables read " + when + ": " + names;
}

std::vector<std::optional<TextColumns>> text_columns_for(const LoadedProgram& loaded) {
  std::vector<std::optional<TextColumns>> columns;
  size_t with_fields = 0;
  for (const auto& decoder : loaded.decoders) with_fields += decoder ? 1 : 0;
  for (size_t i = 0; i < loaded.decoders.size(); ++i) {
    if (!loaded.decoders[i]) {
      columns.emplace_back();
      continue;
    }
    columns.push_back(TextColumns::make(loaded.decoders[i]->layout(), loaded.plan.hints, loaded.table_names[i],
                                        with_fields > 1 || !loaded.data_tables.empty(), true));
  }
  return columns;
}

}  // namespace tcptrace
