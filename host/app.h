// One run of the tool: the steps from options to a detached, summarised end.
#pragma once

#include "options.h"
#include "result.h"

namespace tcptrace {

// Runs until a signal, --duration, --count or a closed stdout ends it. Every
// probe is detached before it returns, on success and on error.
Status run(const Options& options);

}  // namespace tcptrace
