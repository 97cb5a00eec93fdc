// Serves a metrics registry at http://ADDR/metrics in the Prometheus text
// format, with prometheus-cpp's exposer (civetweb). Kept apart from
// metrics.{h,cpp} so the unit-tested part links no HTTP server.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "metrics.h"
#include "privileges.h"
#include "result.h"
#include "web_config.h"

namespace prometheus {
class Collectable;
class Exposer;
}

namespace tcptrace {

class MetricsServer {
 public:
  // Binds and starts serving; an address that cannot be bound (in use, not
  // local) is a runtime error naming the address and civetweb's reason, and
  // so is a certificate or key OpenSSL cannot use (with OpenSSL's reason).
  // `before_scrape` runs on the server's thread at the start of every
  // scrape, before the registry is collected (in-kernel aggregation reads
  // its maps there), and only for a request that passed authentication.
  // `web`, from --web-config, adds TLS and basic authentication. With
  // `thread_privileges`, each server thread drops to them as it starts,
  // before it serves anything (privileges.h).
  static Result<std::unique_ptr<MetricsServer>> start(const MetricsAddress& address,
                                                      std::shared_ptr<prometheus::Registry> registry,
                                                      std::function<void()> before_scrape = {},
                                                      const WebConfig* web = nullptr,
                                                      const PrivilegePlan* thread_privileges = nullptr);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // http://HOST:PORT/metrics (https with TLS) with the port actually bound
  // (port 0 picks one).
  const std::string& url() const { return url_; }

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, std::shared_ptr<prometheus::Registry> registry,
                std::shared_ptr<prometheus::Collectable> hook, std::string url);

  std::unique_ptr<prometheus::Exposer> exposer_;
  // The exposer holds only weak_ptrs to what it collects.
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> hook_;
  std::string url_;
};

}  // namespace tcptrace
