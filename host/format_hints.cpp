#include "format_hints.h"

#include "annotation_lines.h"

#include <array>
#include <cerrno>
#include <utility>

namespace tcptrace {
namespace {

std::vector<std::string> split_commas(std::string_view s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const size_t end = comma == std::string_view::npos ? s.size() : comma;
    parts.emplace_back(s.substr(start, end - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return parts;
}

Result<FormatHint> parse_token(std::string_view token, std::string_view where) {
  auto bad = [&](std::string_view why) {
    return runtime_error(std::string(where) + ": bad format hint '" + std::string(token) +
                         "': " + std::string(why));
  };
  const size_t eq = token.find('=');
  if (eq == std::string_view::npos) return bad("expected FIELD=KIND");
  FormatHint hint;
  std::string_view target = token.substr(0, eq);
  std::string_view kind = token.substr(eq + 1);
  if (const size_t dot = target.find('.'); dot != std::string_view::npos) {
    hint.table = std::string(target.substr(0, dot));
    target = target.substr(dot + 1);
    if (!is_identifier(hint.table)) return bad("table name is not an identifier");
  }
  if (!is_identifier(target)) return bad("field name is not an identifier");
  hint.field = std::string(target);

  std::string_view argument;
  bool has_argument = false;
  if (const size_t paren = kind.find('('); paren != std::string_view::npos) {
    if (kind.back() != ')') return bad("missing ')'");
    argument = kind.substr(paren + 1, kind.size() - paren - 2);
    kind = kind.substr(0, paren);
    has_argument = true;
  }
  if (kind == "ip") {
    hint.format = FieldFormat::ip_address;
    hint.arguments.emplace_back(has_argument ? argument : "family");
    if (!is_identifier(hint.arguments[0])) return bad("family field is not an identifier");
  } else if (kind == "hex") {
    hint.format = FieldFormat::hex;
  } else if (kind == "tcp_state") {
    hint.format = FieldFormat::tcp_state;
  } else if (kind == "errno") {
    hint.format = FieldFormat::errno_name;
  } else if (kind == "string") {
    hint.format = FieldFormat::string;
  } else if (kind == "optional") {
    hint.null_when_zero = true;
  } else if (kind == "enum") {
    hint.format = FieldFormat::enumeration;
    if (!has_argument || argument.empty()) return bad("enum needs a list of names");
    hint.arguments = split_commas(argument);
    for (const auto& name : hint.arguments) {
      if (name.empty()) return bad("empty name in enum list");
    }
  } else {
    return bad("unknown kind (known: ip, hex, tcp_state, errno, enum, string, optional)");
  }
  if (has_argument && hint.format != FieldFormat::ip_address &&
      hint.format != FieldFormat::enumeration) {
    return bad("this kind takes no argument");
  }
  return hint;
}

}  // namespace

Result<std::vector<FormatHint>> parse_format_hints(std::string_view source) {
  std::vector<FormatHint> hints;
  Status status = for_each_annotation_word(source, kFormatHintMarker, [&](std::string_view token, size_t line) {
    auto hint = parse_token(token, "line " + std::to_string(line));
    if (!hint) return Status(std::move(hint).take_error());
    hints.push_back(std::move(hint).value());
    return Status();
  });
  if (!status) return std::move(status).take_error();
  return hints;
}

std::string_view tcp_state_name(uint64_t state) {
  // include/net/tcp_states.h; TCP_BOUND_INACTIVE arrived in Linux 6.10.
  static constexpr std::array<std::string_view, 14> kNames = {
      "",          "ESTABLISHED", "SYN_SENT",   "SYN_RECV", "FIN_WAIT1",
      "FIN_WAIT2", "TIME_WAIT",   "CLOSE",      "CLOSE_WAIT", "LAST_ACK",
      "LISTEN",    "CLOSING",     "NEW_SYN_RECV", "BOUND_INACTIVE"};
  return state < kNames.size() ? kNames[state] : std::string_view{};
}

std::string_view errno_name(uint64_t value) {
  // The errors a socket, a connect() or a BPF helper reports in practice.
  static constexpr std::pair<int, std::string_view> kNames[] = {
      {EPERM, "EPERM"},           {ENOENT, "ENOENT"},
      {EINTR, "EINTR"},           {EIO, "EIO"},
      {EBADF, "EBADF"},           {EAGAIN, "EAGAIN"},
      {ENOMEM, "ENOMEM"},         {EACCES, "EACCES"},
      {EFAULT, "EFAULT"},         {EBUSY, "EBUSY"},
      {EEXIST, "EEXIST"},         {EINVAL, "EINVAL"},
      {EMFILE, "EMFILE"},         {ENOSPC, "ENOSPC"},
      {EPIPE, "EPIPE"},           {ENOSYS, "ENOSYS"},
      {ENOTSOCK, "ENOTSOCK"},     {EPROTO, "EPROTO"},
      {EMSGSIZE, "EMSGSIZE"},     {EPROTOTYPE, "EPROTOTYPE"},
      {ENOPROTOOPT, "ENOPROTOOPT"}, {EPROTONOSUPPORT, "EPROTONOSUPPORT"},
      {EOPNOTSUPP, "EOPNOTSUPP"}, {EAFNOSUPPORT, "EAFNOSUPPORT"},
      {EADDRINUSE, "EADDRINUSE"}, {EADDRNOTAVAIL, "EADDRNOTAVAIL"},
      {ENETDOWN, "ENETDOWN"},     {ENETUNREACH, "ENETUNREACH"},
      {ENETRESET, "ENETRESET"},   {ECONNABORTED, "ECONNABORTED"},
      {ECONNRESET, "ECONNRESET"}, {ENOBUFS, "ENOBUFS"},
      {EISCONN, "EISCONN"},       {ENOTCONN, "ENOTCONN"},
      {ESHUTDOWN, "ESHUTDOWN"},   {ETIMEDOUT, "ETIMEDOUT"},
      {ECONNREFUSED, "ECONNREFUSED"}, {EHOSTDOWN, "EHOSTDOWN"},
      {EHOSTUNREACH, "EHOSTUNREACH"}, {EALREADY, "EALREADY"},
      {EINPROGRESS, "EINPROGRESS"}, {ECANCELED, "ECANCELED"},
  };
  for (const auto& [number, name] : kNames) {
    if (static_cast<uint64_t>(number) == value) return name;
  }
  return {};
}

}  // namespace tcptrace
