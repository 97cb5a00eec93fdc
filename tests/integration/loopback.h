// Real TCP traffic on loopback for integration tests, made by this process
// itself so that its own pid and comm must appear on the traced events.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tcptrace::testing {

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Socket& operator=(Socket&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Socket() { close(); }
  int fd() const { return fd_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Local port (getsockname) in host byte order.
  uint16_t local_port() const {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
    return ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6&>(ss).sin6_port
                                          : reinterpret_cast<sockaddr_in&>(ss).sin_port);
  }

 private:
  int fd_ = -1;
};

inline sockaddr_storage loopback_address(int family, uint16_t port, socklen_t& len) {
  sockaddr_storage ss{};
  if (family == AF_INET6) {
    auto& a = reinterpret_cast<sockaddr_in6&>(ss);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    a.sin6_port = htons(port);
    len = sizeof a;
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(ss);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    len = sizeof a;
  }
  return ss;
}

// A socket bound to a free loopback port; listen() is a separate step so a
// test can learn the port before the tracer starts and still see LISTEN.
//
// The port number is held in both families for the rest of the process: a
// second socket is bound to the same number on the other family's loopback.
// The kernel checks bind() conflicts per address, so 127.0.0.1:P and ::1:P
// can be handed to two sockets at once, and a test that tells its sockets
// apart by port (the events' dport, --dport, the dport label) would count the
// other family's connect too: that failed a CI run, and 637 of 3000 port-0
// binds in each family shared a number when measured here. Holding both also
// keeps the tool's own --metrics 127.0.0.1:0 listener off the test's ::1 ports.
inline Socket bind_loopback(int family) {
  static std::vector<Socket> other_family_holders;
  std::vector<Socket> rejected;
  const int other = family == AF_INET6 ? AF_INET : AF_INET6;
  for (int attempt = 0; attempt < 64; ++attempt) {
    Socket s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (s.fd() < 0) throw std::runtime_error("socket() failed");
    socklen_t len = 0;
    sockaddr_storage ss = loopback_address(family, 0, len);
    if (::bind(s.fd(), reinterpret_cast<sockaddr*>(&ss), len) != 0) throw std::runtime_error("bind() failed");
    Socket holder(::socket(other, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_storage same_port = loopback_address(other, s.local_port(), len);
    if (holder.fd() >= 0 && ::bind(holder.fd(), reinterpret_cast<sockaddr*>(&same_port), len) == 0) {
      other_family_holders.push_back(std::move(holder));
      return s;
    }
    rejected.push_back(std::move(s));  // held, so bind() offers another number
  }
  throw std::runtime_error("bind_loopback: no port free in both families after 64 tries");
}

inline void start_listening(const Socket& s) {
  if (::listen(s.fd(), 64) != 0) throw std::runtime_error("listen() failed");
}

// Blocking connect; returns the socket, or an invalid one with errno set.
inline Socket connect_loopback(int family, uint16_t port) {
  Socket s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  socklen_t len = 0;
  sockaddr_storage ss = loopback_address(family, port, len);
  if (::connect(s.fd(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return Socket();
  return s;
}

inline Socket accept_one(const Socket& listener) {
  return Socket(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
}

// A port nothing listens on: bound (so nobody else takes it) but not listening.
struct ClosedPort {
  Socket holder;
  uint16_t port;
  explicit ClosedPort(int family) : holder(bind_loopback(family)), port(holder.local_port()) {}
};

// Makes `n` connections to `listener` and closes them, alternating which side
// closes first (so both FIN sequences occur). Returns the clients' ports.
inline std::set<uint16_t> exchange_connections(int family, const Socket& listener, int n) {
  std::set<uint16_t> client_ports;
  for (int i = 0; i < n; ++i) {
    Socket client = connect_loopback(family, listener.local_port());
    EXPECT_GE(client.fd(), 0) << "connect failed: " << strerror(errno);
    if (client.fd() < 0) continue;
    client_ports.insert(client.local_port());
    Socket server = accept_one(listener);
    EXPECT_GE(server.fd(), 0);
    EXPECT_EQ(write(client.fd(), "x", 1), 1);
    // Read it: closing a socket with unread data sends RST (RFC 2525) and
    // skips the FIN states this exchange is meant to show.
    char byte = 0;
    EXPECT_EQ(read(server.fd(), &byte, 1), 1);
    if (i % 2 == 0) {
      client.close();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      server.close();
    } else {
      server.close();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      client.close();
    }
  }
  return client_ports;
}

}  // namespace tcptrace::testing
