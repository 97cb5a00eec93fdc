// A network namespace of a test's own (`ip netns add`, loopback up), deleted
// with the object, and a way to run code inside it. Its counters
// (/proc/net/snmp read from inside) see only the test's traffic.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace tcptrace::testing {

class NetworkNamespace {
 public:
  explicit NetworkNamespace(std::string name) : name_(std::move(name)) {
    remove();  // one a killed run left behind
    created_ = std::system(("ip netns add " + name_ + " && ip -n " + name_ + " link set lo up").c_str()) == 0;
  }
  ~NetworkNamespace() { remove(); }
  NetworkNamespace(const NetworkNamespace&) = delete;
  NetworkNamespace& operator=(const NetworkNamespace&) = delete;

  bool created() const { return created_; }
  // Deletes the namespace; there may be none, so the status says nothing.
  void remove() {
    if (std::system(("ip netns del " + name_ + " 2>/dev/null").c_str()) != 0) return;
  }
  const std::string& name() const { return name_; }

  // Runs `work` on a thread that joins the namespace: setns() moves only the
  // calling thread, and the sockets it makes stay in the namespace after it.
  template <typename Work>
  void run_inside(Work&& work) const {
    std::thread([&] {
      const int ns = ::open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
        ADD_FAILURE() << "cannot enter network namespace " << name_ << ": " << std::strerror(errno);
      } else {
        work();
      }
      if (ns >= 0) ::close(ns);
    }).join();
  }

 private:
  std::string name_;
  bool created_ = false;
};

}  // namespace tcptrace::testing
