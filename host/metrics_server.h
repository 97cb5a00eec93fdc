// Serves a metrics registry at http://ADDR/metrics in the Prometheus text
// format, with prometheus-cpp's exposer (civetweb). Kept apart from
// metrics.{h,cpp} so the unit-tested part links no HTTP server.
#pragma once

#include <memory>
#include <string>

#include "metrics.h"
#include "result.h"

namespace prometheus {
class Exposer;
}

namespace tcptrace {

class MetricsServer {
 public:
  // Binds and starts serving; an address that cannot be bound (in use, not
  // local) is a runtime error naming the address and civetweb's reason.
  static Result<std::unique_ptr<MetricsServer>> start(const MetricsAddress& address,
                                                      std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // http://HOST:PORT/metrics with the port actually bound (port 0 picks one).
  const std::string& url() const { return url_; }

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, std::shared_ptr<prometheus::Registry> registry,
                std::string url);

  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Registry> registry_;  // the exposer holds only a weak_ptr
  std::string url_;
};

}  // namespace tcptrace
