// A minimal HTTP/1.0 GET over a loopback socket, for scraping the tool's
// /metrics and querying a Prometheus server in tests. (The product serves
// HTTP with prometheus-cpp; this client only reads a response to its end.)
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <sstream>
#include <string>

namespace tcptrace::testing {

struct HttpResponse {
  int status = 0;  // 0: no response (connect failed, timeout)
  std::string headers;
  std::string body;
};

// A whole HTTP response as read to EOF; status 0 when it is not one.
inline HttpResponse parse_http_response(const std::string& raw) {
  HttpResponse response;
  const size_t end_of_headers = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || end_of_headers == std::string::npos) return response;
  response.status = std::stoi(raw.substr(9, 3));
  response.headers = raw.substr(0, end_of_headers);
  response.body = raw.substr(end_of_headers + 4);
  return response;
}

// A TCP connection to 127.0.0.1:port whose reads give up after 10 s, or -1.
inline int connect_local_port(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// GET http://127.0.0.1:port<target>. HTTP/1.0, so the server closes the
// connection after the response and EOF marks its end. `extra_headers`:
// whole header lines, each ending in CRLF.
inline HttpResponse http_get(uint16_t port, const std::string& target, const std::string& extra_headers = "") {
  HttpResponse response;
  const int fd = connect_local_port(port);
  if (fd < 0) return response;
  const std::string request =
      "GET " + target + " HTTP/1.0\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\n" + extra_headers + "\r\n";
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    return response;
  }
  std::string raw;
  char buffer[8192];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) raw.append(buffer, static_cast<size_t>(n));
  ::close(fd);
  return parse_http_response(raw);
}

// Prometheus text format: "name{labels} value" -> value; comments skipped.
inline std::map<std::string, double> parse_exposition(const std::string& text) {
  std::map<std::string, double> series;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    series[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return series;
}

// The port of the tool's "serving metrics at http://127.0.0.1:PORT/metrics"
// line (https:// with TLS) in `stderr_text`, 0 if there is none.
inline uint16_t served_metrics_port(const std::string& stderr_text) {
  for (const std::string scheme : {"http", "https"}) {
    const std::string marker = "serving metrics at " + scheme + "://127.0.0.1:";
    const size_t at = stderr_text.find(marker);
    if (at != std::string::npos) return static_cast<uint16_t>(std::stoi(stderr_text.substr(at + marker.size())));
  }
  return 0;
}

// A free loopback TCP port: bound to port 0 and released. Another process
// could take it before the caller binds it; tests that can pass port 0 to
// the process under test do that instead.
inline uint16_t free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace tcptrace::testing
