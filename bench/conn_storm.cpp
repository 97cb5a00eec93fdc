// A loopback connection storm: N connect/accept/close cycles, client and
// server in this process, for the soak test and the benchmarks.
//
//   conn_storm --connections 50000 [--json]
//
// Each cycle is a full TCP lifetime on both sides (the client closes first),
// so a state tracer sees a complete chain per socket: the client's CLOSE ->
// SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE and the server's
// LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE.
// Client sockets end in TIME_WAIT for 60 s, holding their 4-tuple, so the
// destination rotates over 127.0.0.1 .. 127.0.0.250 (all loopback) to keep
// ephemeral ports from running out on long runs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

double now_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "conn_storm: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  long connections = 10000;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--connections" && i + 1 < argc) {
      connections = std::strtol(argv[++i], nullptr, 10);
    } else if (arg == "--json") {
      json = true;
    } else {
      std::fprintf(stderr, "usage: conn_storm [--connections N] [--json]\n");
      return 2;
    }
  }
  if (connections <= 0) {
    std::fprintf(stderr, "conn_storm: --connections must be positive\n");
    return 2;
  }

  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  const int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(listener, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) die("bind");
  if (listen(listener, 4096) != 0) die("listen");
  socklen_t len = sizeof any;
  getsockname(listener, reinterpret_cast<sockaddr*>(&any), &len);

  const double start = now_seconds();
  long failed = 0;
  for (long i = 0; i < connections; ++i) {
    sockaddr_in target{};
    target.sin_family = AF_INET;
    target.sin_port = any.sin_port;
    target.sin_addr.s_addr = htonl(0x7f000001 + static_cast<uint32_t>(i % 250));
    const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client < 0) die("socket");
    if (connect(client, reinterpret_cast<sockaddr*>(&target), sizeof target) != 0) {
      ++failed;
      close(client);
      continue;
    }
    const int server = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (server < 0) die("accept");
    close(client);
    close(server);
  }
  const double seconds = now_seconds() - start;
  close(listener);
  const long made = connections - failed;
  if (json) {
    std::printf("{\"connections\":%ld,\"failed\":%ld,\"seconds\":%.3f,\"per_second\":%.0f,\"port\":%u}\n", made,
                failed, seconds, made / seconds, ntohs(any.sin_port));
  } else {
    std::printf("%ld connections (%ld failed) in %.3f s: %.0f/s\n", made, failed, seconds, made / seconds);
  }
  return failed == 0 ? 0 : 1;
}
