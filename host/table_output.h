// Binds a loaded program's tables (table_reader.h) and --output text to the
// run loop in app.cpp: kept here so the loop gains only a few calls.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "event_output.h"
#include "options.h"
#include "program_loader.h"
#include "table_reader.h"
#include "text_output.h"
#include "wall_clock.h"

namespace tcptrace {

// The reads of `loaded`'s tables over its run, printing into `writer` as
// --output says; nullptr when the program has no tables. `loaded` must
// outlive the result (its map fds are read).
std::unique_ptr<TableOutput> start_table_output(const LoadedProgram& loaded, const Options& options,
                                                StdoutWriter& writer, TableMetrics* metrics, const WallClock& clock,
                                                double now_seconds);

// One line for stderr naming the tables read and how, or "" when none.
std::string describe_tables(const LoadedProgram& loaded, const Options& options);

// --output text: the columns of each output table (nullopt for a table that
// carries no struct).
std::vector<std::optional<TextColumns>> text_columns_for(const LoadedProgram& loaded);

}  // namespace tcptrace
