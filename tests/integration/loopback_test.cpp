// The loopback helpers the other integration tests tell their sockets apart
// with: a port number handed out by bind_loopback() belongs to one socket of
// the test in both families.
#include "loopback.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace tcptrace::testing {
namespace {

// Without the hold on the other family, 200 port-0 binds in each family
// shared a few numbers on this machine (637 of 3000 each when measured).
TEST(Loopback, PortsAreDistinctAcrossFamilies) {
  std::vector<Socket> sockets;
  std::set<uint16_t> ports4, ports6;
  for (int i = 0; i < 200; ++i) {
    sockets.push_back(bind_loopback(AF_INET));
    ports4.insert(sockets.back().local_port());
    sockets.push_back(bind_loopback(AF_INET6));
    ports6.insert(sockets.back().local_port());
  }
  EXPECT_EQ(ports4.size(), 200u);
  EXPECT_EQ(ports6.size(), 200u);
  for (uint16_t port : ports4) EXPECT_EQ(ports6.count(port), 0u) << port;
}

// Another process (the tool's --metrics 127.0.0.1:0 listener) cannot take
// a ::1 port of the test on 127.0.0.1 either.
TEST(Loopback, OtherFamilyCannotBindTheSameNumber) {
  const Socket s6 = bind_loopback(AF_INET6);
  Socket s4(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  socklen_t len = 0;
  sockaddr_storage same = loopback_address(AF_INET, s6.local_port(), len);
  EXPECT_NE(::bind(s4.fd(), reinterpret_cast<sockaddr*>(&same), len), 0);
  EXPECT_EQ(errno, EADDRINUSE);
}

}  // namespace
}  // namespace tcptrace::testing
