// The /metrics server itself: connections that send nothing must not keep
// Prometheus or a liveness probe from their answer, and --web-config's
// basic authentication and TLS, seen from real clients.
#include <crypt.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "http_get.h"
#include "loopback.h"
#include "temp_dir.h"
#include "tls_test_support.h"
#include "tool_process.h"

namespace tcptrace::testing {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// connlat with metrics only (nothing in it matters here but the server),
// its --dport a closed port so that no traffic is counted.
std::unique_ptr<ToolProcess> start_metrics_only(const std::vector<std::string>& more = {}) {
  static const ClosedPort closed{AF_INET};
  std::vector<std::string> args = {"--program", "connlat", "--metrics", "127.0.0.1:0", "--output", "none",
                                   "--dport", std::to_string(closed.port)};
  args.insert(args.end(), more.begin(), more.end());
  return start_ready(args);
}

// Whether the peer closed `socket` (EOF or reset) within `timeout`.
bool closed_by_peer_within(const Socket& socket, std::chrono::milliseconds timeout) {
  pollfd p{socket.fd(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
  char byte;
  return ::recv(socket.fd(), &byte, 1, MSG_DONTWAIT) <= 0;
}

// civetweb serves each connection on one worker thread from accept() to
// close, and a worker waits for a request line up to request_timeout_ms. Two
// idle connections (a port scanner, a load balancer's TCP check, a stuck
// client) held every worker of a two-thread server for 30 s, so a scrape and
// the kubelet's liveness probe waited behind them.
TEST(MetricsServer, ScrapeAnswersWithinASecondWhileTwoIdleConnectionsAreOpen) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  auto tool = start_metrics_only();
  ASSERT_TRUE(tool);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  ASSERT_NE(port, 0) << tool->stderr_text();

  std::vector<Socket> idle;
  for (int i = 0; i < 2; ++i) {
    idle.push_back(connect_loopback(AF_INET, port));
    ASSERT_GE(idle.back().fd(), 0);
  }
  // Long enough for the server to hand both to workers, which then wait for
  // a request that never comes.
  std::this_thread::sleep_for(300ms);

  const auto start = std::chrono::steady_clock::now();
  const HttpResponse response = http_get(port, "/metrics");
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(response.status, 200) << response.headers;
  EXPECT_NE(response.body.find("tcptrace_build_info"), std::string::npos);
  EXPECT_LT(took, 1s) << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";

  // The idle connections do not stay: the server drops each once its short
  // request timeout passes.
  for (const Socket& s : idle) EXPECT_TRUE(closed_by_peer_within(s, 5s));
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
}

// A bcrypt hash from libcrypt, cost 8: a real hash, checked on every scrape,
// and quick enough for a test.
std::string bcrypt(const std::string& password) {
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn("$2y$", 8, nullptr, 0, setting, sizeof setting) == nullptr) return "";
  crypt_data data{};
  const char* hash = crypt_rn(password.c_str(), setting, &data, sizeof data);
  return hash == nullptr ? "" : hash;
}

std::string authorization(const std::string& user, const std::string& password) {
  return "Authorization: Basic " + basic_credentials(user, password) + "\r\n";
}

TEST(MetricsWebConfig, BasicAuthAnswers401WithoutCredentialsAnd200WithThem) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  TempDir dir("tcptrace-web-config");
  ASSERT_FALSE(dir.path().empty());
  const std::string hash = bcrypt("s3cret pass");
  ASSERT_EQ(hash.size(), 60u);
  std::ofstream(dir.path() / "web.yml") << "basic_auth_users:\n  prometheus: " << hash << "\n";
  auto tool = start_metrics_only({"--web-config", (dir.path() / "web.yml").string()});
  ASSERT_TRUE(tool);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  ASSERT_NE(port, 0) << tool->stderr_text();
  EXPECT_NE(tool->stderr_text().find("serving metrics at http://127.0.0.1:"), std::string::npos);

  const HttpResponse anonymous = http_get(port, "/metrics");
  EXPECT_EQ(anonymous.status, 401) << anonymous.headers;
  EXPECT_NE(anonymous.headers.find("WWW-Authenticate: Basic realm=\"tcptrace-bcc\""), std::string::npos)
      << anonymous.headers;
  EXPECT_EQ(anonymous.body.find("tcptrace_"), std::string::npos) << anonymous.body;
  for (const auto& [user, password] : std::vector<std::pair<std::string, std::string>>{
           {"prometheus", "wrong"}, {"prometheus", "s3cret pas"}, {"nobody", "s3cret pass"}, {"", ""}}) {
    const HttpResponse refused = http_get(port, "/metrics", authorization(user, password));
    EXPECT_EQ(refused.status, 401) << user << ":" << password;
    EXPECT_EQ(refused.body.find("tcptrace_"), std::string::npos);
  }
  const HttpResponse allowed = http_get(port, "/metrics", authorization("prometheus", "s3cret pass"));
  EXPECT_EQ(allowed.status, 200) << allowed.headers;
  EXPECT_NE(allowed.body.find("tcptrace_build_info"), std::string::npos);
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
}

// A certificate the test makes with openssl, named in the file relative to
// it: the tool serves HTTPS only, with that certificate.
TEST(MetricsWebConfig, ServesTlsWithTheConfiguredCertificate) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  TempDir dir("tcptrace-web-config");
  ASSERT_FALSE(dir.path().empty());
  ASSERT_TRUE(make_certificate(dir.path() / "cert.pem", dir.path() / "key.pem")) << "openssl req failed";
  ASSERT_TRUE(make_certificate(dir.path() / "other.pem", dir.path() / "other-key.pem"));
  std::ofstream(dir.path() / "web.yml") << "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n";
  auto tool = start_metrics_only({"--web-config", (dir.path() / "web.yml").string()});
  ASSERT_TRUE(tool);
  const uint16_t port = served_metrics_port(tool->stderr_text());
  ASSERT_NE(port, 0) << tool->stderr_text();
  EXPECT_NE(tool->stderr_text().find("serving metrics at https://127.0.0.1:" + std::to_string(port) + "/metrics"),
            std::string::npos)
      << tool->stderr_text();

  std::string failure;
  const HttpResponse secure = https_get(port, "/metrics", (dir.path() / "cert.pem").string(), "tcptrace-test", "",
                                        &failure);
  EXPECT_EQ(secure.status, 200) << failure;
  EXPECT_NE(secure.body.find("tcptrace_build_info"), std::string::npos);
  // By IP address too: the certificate names 127.0.0.1.
  EXPECT_EQ(https_get(port, "/metrics", (dir.path() / "cert.pem").string(), "127.0.0.1").status, 200);
  // A client that trusts another certificate refuses this one.
  std::string refused;
  EXPECT_EQ(https_get(port, "/metrics", (dir.path() / "other.pem").string(), "tcptrace-test", "", &refused).status,
            0);
  EXPECT_NE(refused.find("certificate verify failed"), std::string::npos) << refused;
  // Plain HTTP gets no metrics from the TLS port.
  const HttpResponse plain = http_get(port, "/metrics");
  EXPECT_NE(plain.status, 200);
  EXPECT_EQ(plain.body.find("tcptrace_"), std::string::npos);
  EXPECT_EQ(tool->stop(SIGINT), 0) << tool->stderr_text();
}

// Mistakes in the file or its certificate stop the tool at start, before
// anything is compiled or loaded: one line, exit 2 for the file's content,
// 1 for a key OpenSSL refuses.
TEST(MetricsWebConfig, MistakesStopTheToolAtStartWithOneLine) {
  TCPTRACE_REQUIRE_PRIVILEGES();
  TempDir dir("tcptrace-web-config");
  ASSERT_FALSE(dir.path().empty());
  ASSERT_TRUE(make_certificate(dir.path() / "cert.pem", dir.path() / "key.pem"));
  ASSERT_TRUE(make_certificate(dir.path() / "other.pem", dir.path() / "other-key.pem"));
  const fs::path typo = dir.path() / "typo.yml";
  std::ofstream(typo) << "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth:\n  a: b\n";
  const fs::path mismatch = dir.path() / "mismatch.yml";
  std::ofstream(mismatch) << "tls_server_config:\n  cert_file: cert.pem\n  key_file: other-key.pem\n";
  const std::set<uint32_t> before = loaded_bpf_program_ids();

  ToolProcess unknown({"--program", "connlat", "--metrics", "127.0.0.1:0", "--web-config", typo.string()});
  EXPECT_EQ(unknown.wait_exit(60s), 2);
  EXPECT_EQ(unknown.stderr_text(), "tcptrace-bcc: --web-config " + typo.string() + ":4: unknown key 'basic_auth'\n");

  ToolProcess wrong_key({"--program", "connlat", "--metrics", "127.0.0.1:0", "--web-config", mismatch.string()});
  EXPECT_EQ(wrong_key.wait_exit(60s), 1);
  const std::string err = wrong_key.stderr_text();
  EXPECT_EQ(err.rfind("tcptrace-bcc: --web-config " + mismatch.string() + ": ", 0), 0u) << err;
  EXPECT_NE(err.find("does not belong to the certificate"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_EQ(wrong_key.stdout_text(), "");

  ToolProcess without_metrics({"--program", "connlat", "--web-config", typo.string()});
  EXPECT_EQ(without_metrics.wait_exit(60s), 2);
  EXPECT_EQ(without_metrics.stderr_text(), "tcptrace-bcc: --web-config needs --metrics ADDR\n");
  EXPECT_EQ(loaded_bpf_program_ids(), before);
}

}  // namespace
}  // namespace tcptrace::testing
