// Redirections of the process's stdio around calls into libbcc, which prints
// to stdout and stderr itself: stdout carries only event lines, and what
// clang or the verifier prints is the host's to map onto the user's file.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "unique_fd.h"

namespace tcptrace {

// Everything in a file from its first byte (an in-memory file another
// writer filled), whatever the fd's offset.
inline std::string read_from_start(int fd) {
  std::string text;
  char buf[8192];
  off_t offset = 0;
  ssize_t n;
  while ((n = ::pread(fd, buf, sizeof buf, offset)) > 0) {
    text.append(buf, static_cast<size_t>(n));
    offset += n;
  }
  return text;
}

// libbcc writes some messages to stdout with std::cout (loader.cc: "Unable to
// find kernel headers"). While it runs, stdout is pointed at stderr.
class StdoutToStderr {
 public:
  StdoutToStderr() {
    std::fflush(stdout);
    saved_ = UniqueFd(::dup(STDOUT_FILENO));
    if (saved_.valid()) ::dup2(STDERR_FILENO, STDOUT_FILENO);
  }
  ~StdoutToStderr() {
    std::fflush(stdout);
    if (saved_.valid()) ::dup2(saved_.get(), STDOUT_FILENO);
  }
  StdoutToStderr(const StdoutToStderr&) = delete;
  StdoutToStderr& operator=(const StdoutToStderr&) = delete;

 private:
  UniqueFd saved_;
};

// clang prints diagnostics to stderr (loader.cc: TextDiagnosticPrinter on
// llvm::errs()), libbcc's loaders print the verifier's log and attach
// failures there too. While one runs, stderr goes to an in-memory file so
// the host can tell errors in the program from errors in kernel headers,
// and point them at the user's file.
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    file_ = UniqueFd(::memfd_create("tcptrace-captured-stderr", MFD_CLOEXEC));
    saved_ = UniqueFd(::dup(STDERR_FILENO));
    if (file_.valid() && saved_.valid()) ::dup2(file_.get(), STDERR_FILENO);
  }
  ~StderrCapture() { restore(); }
  StderrCapture(const StderrCapture&) = delete;
  StderrCapture& operator=(const StderrCapture&) = delete;

  std::string finish() {
    restore();
    return file_.valid() ? read_from_start(file_.get()) : std::string();
  }

 private:
  void restore() {
    if (saved_.valid()) {
      std::fflush(stderr);
      ::dup2(saved_.get(), STDERR_FILENO);
      saved_.reset();
    }
  }
  UniqueFd file_;
  UniqueFd saved_;
};

}  // namespace tcptrace
