#include "metrics_server.h"

#include <CivetServer.h>
#include <civetweb.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <unistd.h>

#include <mutex>
#include <stdexcept>

namespace tcptrace {
namespace {

// civetweb explains a failed start ("cannot bind to 127.0.0.1:9464: Address
// already in use") only through its log callback; the exception it throws
// says no more than "null context". The callback keeps the first message of
// a start for the error line; later messages (a client's bad request) would
// only be noise on stderr, which carries the tool's own lines.
std::mutex g_log_mutex;
std::string* g_start_log = nullptr;

int keep_start_message(const mg_connection*, const char* message) {
  std::lock_guard lock(g_log_mutex);
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
                                                            const PrivilegePlan* thread_privileges) {
  // mg_check_feature(8): IPv6 support, which Debian 12's civetweb is built
  // without; it would only say "invalid port spec".
  if (address.ipv6 && mg_check_feature(8) == 0) {
    return runtime_error("--metrics: cannot serve on " + address.listen_spec() +
                         ": the civetweb library this tool uses has no IPv6 support; use an IPv4 address");
  }
  static CivetCallbacks callbacks;
  callbacks.log_message = keep_start_message;
  static PrivilegePlan thread_plan;
  if (thread_privileges != nullptr) {
    thread_plan = *thread_privileges;
    g_thread_privileges = &thread_plan;
    callbacks.init_thread = drop_thread_privileges;
  }
  std::string start_log;
  {
    std::lock_guard lock(g_log_mutex);
    g_start_log = &start_log;
  }
  std::unique_ptr<prometheus::Exposer> exposer;
  std::string failure;
  try {
    // Two threads: one scrape at a time is the normal case, a second keeps a
    // slow client from blocking Prometheus.
    exposer = std::make_unique<prometheus::Exposer>(address.listen_spec(), 2, &callbacks);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  {
    std::lock_guard lock(g_log_mutex);
    g_start_log = nullptr;
  }
  if (!exposer) {
    return runtime_error("--metrics: cannot serve on " + address.listen_spec() + ": " +
                         (start_log.empty() ? failure : start_log));
  }
  std::shared_ptr<prometheus::Collectable> hook;
  if (before_scrape) {
    hook = std::make_shared<BeforeScrape>(std::move(before_scrape));
    exposer->RegisterCollectable(hook);
  }
  exposer->RegisterCollectable(registry);
  const std::vector<int> ports = exposer->GetListeningPorts();
  const uint16_t port = ports.empty() ? address.port : static_cast<uint16_t>(ports.front());
  std::string url = "http://" + address.authority(port) + "/metrics";
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(exposer), std::move(registry), std::move(hook), std::move(url)));
}

}  // namespace tcptrace
