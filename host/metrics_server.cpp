#include "metrics_server.h"

#include <CivetServer.h>
#include <civetweb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <unistd.h>

#include <mutex>
#include <stdexcept>

namespace tcptrace {
namespace {

// How the server treats its clients. civetweb serves each connection on one
// worker thread from accept() to close, and a worker waits for a request up
// to request_timeout_ms; connections beyond the workers wait, accepted, in a
// queue of connection_queue, and beyond that in the kernel's listen backlog.
// - Workers: two Prometheus servers (an HA pair), the kubelet's liveness
//   probe and a few stray clients at once, each answered at once.
// - Request timeout: a scrape sends its request as soon as it connects (and,
//   with TLS, completes the handshake, which civetweb bounds by the same
//   timeout); a connection that sends nothing for 2 s is a scanner, a TCP
//   health check or a stuck client, and its worker goes back to the pool.
// - Keep-alive off (civetweb's default, stated here because it matters): a
//   kept-alive connection would hold its worker between scrapes.
// - The queue bounds the connections held at once to workers + queue: the
//   accept loop stops taking new ones while it is full, so idle clients cost
//   at most that many sockets and 2 s each before a scrape is served.
// - linger_timeout_ms stays unset: without SO_LINGER, close() returns at once
//   and the kernel sends what is left, so closing never blocks a worker.
constexpr const char* kWorkerThreads = "8";
constexpr const char* kRequestTimeoutMs = "2000";
constexpr const char* kConnectionQueue = "16";

// civetweb explains a failed start ("cannot bind to 127.0.0.1:9464: Address
// already in use") only through its log callback; the exception it throws
// says no more than "null context". The callback keeps the first message of
// a start for the error line; later messages (a client's bad request, a
// failed TLS handshake) would only be noise on stderr, which carries the
// tool's own lines.
std::mutex g_start_mutex;
std::string* g_start_log = nullptr;
// The TLS files of the start under way, for the init_ssl callback, and what
// went wrong with them (OpenSSL's reason, which civetweb does not log).
const WebTls* g_start_tls = nullptr;
std::string* g_start_tls_error = nullptr;

int keep_start_message(const mg_connection*, const char* message) {
  std::lock_guard lock(g_start_mutex);
  if (g_start_log != nullptr && g_start_log->empty() && message != nullptr) *g_start_log = message;
  return 1;  // handled: civetweb prints nothing
}

// The privileges the server's threads keep (privileges.h); civetweb calls
// init_thread in each thread it starts, before the thread serves anything.
// A thread that cannot drop them ends the process: serving with more than
// the plan allows is not an option.
const PrivilegePlan* g_thread_privileges = nullptr;

void* drop_thread_privileges(const mg_context*, int) {
  if (g_thread_privileges != nullptr && !drop_privileges(*g_thread_privileges)) {
    static const char message[] = "tcptrace-bcc: a metrics server thread cannot drop its capabilities\n";
    (void)!::write(STDERR_FILENO, message, sizeof message - 1);
    _exit(1);
  }
  return nullptr;
}

// OpenSSL's reason for the last failure on this thread, "" if none.
std::string openssl_reason() {
  std::string reason;
  while (const unsigned long code = ERR_get_error()) {
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    reason = text;  // the last is the outermost
  }
  return reason;
}

// civetweb's ssl_certificate takes one file holding both certificate and
// key; exporter-toolkit's format names two. civetweb calls init_ssl with
// the SSL_CTX it created (from the libssl.so.3 this binary links: civetweb's
// dlopen of "libssl.so" gets host/civetweb_tls's shim, whose dependency it
// is), and a return of 1
// tells it the certificate is set up. It has already set TLS 1.2 as the
// lowest version (ssl_protocol_version 4) by then.
int use_tls_files(void* ssl_ctx, void*) {
  std::lock_guard lock(g_start_mutex);
  if (g_start_tls == nullptr || g_start_tls_error == nullptr) return -1;
  auto* ctx = static_cast<SSL_CTX*>(ssl_ctx);
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx, g_start_tls->cert_file.c_str()) != 1) {
    *g_start_tls_error = "cannot use the certificate " + g_start_tls->cert_file + ": " + openssl_reason();
    return -1;
  }
  // OpenSSL 3 compares a key with the certificate already set as it loads
  // the key (X509_R_KEY_VALUES_MISMATCH); older versions only in
  // SSL_CTX_check_private_key.
  if (SSL_CTX_use_PrivateKey_file(ctx, g_start_tls->key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    const bool mismatch = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
    const std::string reason = openssl_reason();
    *g_start_tls_error = mismatch ? "the key " + g_start_tls->key_file + " does not belong to the certificate " +
                                        g_start_tls->cert_file + ": " + reason
                                  : "cannot use the key " + g_start_tls->key_file + ": " + reason;
    return -1;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    *g_start_tls_error = "the key " + g_start_tls->key_file + " does not belong to the certificate " +
                         g_start_tls->cert_file + ": " + openssl_reason();
    return -1;
  }
  return 1;
}

// A collectable that contributes no metric: prometheus-cpp's exposer
// collects its collectables in the order they were registered, so one
// registered before the registry runs first in every scrape.
class BeforeScrape : public prometheus::Collectable {
 public:
  explicit BeforeScrape(std::function<void()> action) : action_(std::move(action)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    action_();
    return {};
  }

 private:
  std::function<void()> action_;
};

}  // namespace

MetricsServer::MetricsServer(std::unique_ptr<prometheus::Exposer> exposer,
                             std::shared_ptr<prometheus::Registry> registry,
                             std::shared_ptr<prometheus::Collectable> hook, std::string url)
    : exposer_(std::move(exposer)), registry_(std::move(registry)), hook_(std::move(hook)), url_(std::move(url)) {}

MetricsServer::~MetricsServer() = default;

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const MetricsAddress& address,
                                                            std::shared_ptr<prometheus::Registry> registry,
                                                            std::function<void()> before_scrape,
                                                            const WebConfig* web,
                                                            const PrivilegePlan* thread_privileges) {
  // mg_check_feature(8): IPv6 support, which Debian 12's civetweb is built
  // without; it would only say "invalid port spec".
  if (address.ipv6 && mg_check_feature(8) == 0) {
    return runtime_error("--metrics: cannot serve on " + address.listen_spec() +
                         ": the civetweb library this tool uses has no IPv6 support; use an IPv4 address");
  }
  const bool tls = web != nullptr && web->tls.has_value();
  // mg_check_feature(2): HTTPS, which civetweb has only when built with it.
  if (tls && mg_check_feature(2) == 0) {
    return runtime_error("--web-config " + web->path +
                         ": the civetweb library this tool uses has no TLS support; remove tls_server_config");
  }
  static CivetCallbacks callbacks;
  callbacks.log_message = keep_start_message;
  static PrivilegePlan thread_plan;
  if (thread_privileges != nullptr) {
    thread_plan = *thread_privileges;
    g_thread_privileges = &thread_plan;
    callbacks.init_thread = drop_thread_privileges;
  }
  callbacks.init_ssl = use_tls_files;
  std::vector<std::string> civetweb_options = {
      // A trailing "s" makes a port serve HTTPS only.
      "listening_ports", address.listen_spec() + (tls ? "s" : ""),
      "num_threads", kWorkerThreads,
      "request_timeout_ms", kRequestTimeoutMs,
      "connection_queue", kConnectionQueue,
      "enable_keep_alive", "no",
  };
  if (tls) {
    // TLS 1.2 and later, exporter-toolkit's default min_version.
    civetweb_options.insert(civetweb_options.end(), {"ssl_protocol_version", "4"});
  }
  std::string start_log, tls_error;
  {
    std::lock_guard lock(g_start_mutex);
    g_start_log = &start_log;
    g_start_tls = tls ? &*web->tls : nullptr;
    g_start_tls_error = &tls_error;
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string failure;
  try {
    exposer = std::make_unique<prometheus::Exposer>(civetweb_options, &callbacks);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  {
    std::lock_guard lock(g_start_mutex);
    g_start_log = nullptr;
    g_start_tls = nullptr;
    g_start_tls_error = nullptr;
  }
  if (!exposer) {
    if (!tls_error.empty()) return runtime_error("--web-config " + web->path + ": " + tls_error);
    return runtime_error("--metrics: cannot serve on " + address.listen_spec() + ": " +
                         (start_log.empty() ? failure : start_log));
  }
  if (web != nullptr && web->needs_auth()) {
    // prometheus-cpp's handler decodes "Authorization: Basic ..." and
    // answers 401 with a WWW-Authenticate challenge unless this returns
    // true; civetweb runs it before the scrape handler, so no unauthenticated
    // request reaches the registry or before_scrape. Registered before any
    // collectable: until then /metrics answers with an empty body. The copy
    // lives as long as the handler.
    auto users = std::make_shared<const WebConfig>(*web);
    exposer->RegisterAuth([users](const std::string& user, const std::string& password) {
      return users->verify(user, password);
    }, "tcptrace-bcc");
  }
  std::shared_ptr<prometheus::Collectable> hook;
  if (before_scrape) {
    hook = std::make_shared<BeforeScrape>(std::move(before_scrape));
    exposer->RegisterCollectable(hook);
  }
  exposer->RegisterCollectable(registry);
  const std::vector<int> ports = exposer->GetListeningPorts();
  const uint16_t port = ports.empty() ? address.port : static_cast<uint16_t>(ports.front());
  std::string url = std::string(tls ? "https" : "http") + "://" + address.authority(port) + "/metrics";
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(exposer), std::move(registry), std::move(hook), std::move(url)));
}

}  // namespace tcptrace
