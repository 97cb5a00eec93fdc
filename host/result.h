// The project's one error model (see docs in README, "Errors and exit codes").
//
// - A function that can fail returns Result<T>. The error carries the exit
//   status the process will end with and one human-readable line.
// - Nothing below main() prints an error or calls exit(): errors travel up as
//   values, so destructors (and with them every RAII probe detach) always run.
// - Only main() turns an Error into "tcptrace-bcc: <message>" on stderr plus
//   its exit status. Exceptions from third-party code (cxxopts, nlohmann) are
//   caught at the call site that uses them and converted here.
// - Broken internal invariants are bugs: assert(), not Result.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace tcptrace {

enum class ExitCode : int {
  ok = 0,
  runtime = 1,  // the request was well-formed but could not be carried out
  usage = 2,    // the command line itself is wrong
};

struct Error {
  ExitCode exit_code = ExitCode::runtime;
  std::string message;
};

inline Error usage_error(std::string message) {
  return Error{ExitCode::usage, std::move(message)};
}
inline Error runtime_error(std::string message) {
  return Error{ExitCode::runtime, std::move(message)};
}

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}
  Result(Error error) : state_(std::move(error)) {}

  bool ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<T>(state_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(state_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(state_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<Error>(state_);
  }
  Error take_error() && {
    assert(!ok());
    return std::get<Error>(std::move(state_));
  }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    assert(failed_);
    return error_;
  }
  Error take_error() && {
    assert(failed_);
    return std::move(error_);
  }

 private:
  Error error_;
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace tcptrace
