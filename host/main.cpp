// tcptrace-bcc: compile a BPF program with BCC, attach it, print JSON lines.
#include <cstdio>
#include <iostream>

#include "app.h"
#include "diagnostics.h"
#include "options.h"

#ifndef TCPTRACE_VERSION
#define TCPTRACE_VERSION "0.0.0"
#endif

int main(int argc, char** argv) {
  using namespace tcptrace;
  auto options = parse_options(argc, argv);
  if (!options) {
    report(options.error().message);
    return static_cast<int>(options.error().exit_code);
  }
  if (options->help) {
    std::cout << usage_text();
    return 0;
  }
  if (options->version) {
    std::cout << "tcptrace-bcc " << TCPTRACE_VERSION << "\n";
    return 0;
  }
  Status status = run(*options);
  if (!status) {
    report(status.error().message);
    return static_cast<int>(status.error().exit_code);
  }
  return 0;
}
