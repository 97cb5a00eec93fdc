// --web-config FILE: TLS and basic authentication for the /metrics server,
// read from the file format of the Prometheus exporter-toolkit (the one
// node_exporter's --web.config.file takes), limited to the keys this tool
// serves: tls_server_config.cert_file, tls_server_config.key_file and
// basic_auth_users (bcrypt hashes, checked with the system's libcrypt).
// Kept apart from metrics_server.cpp so it is unit-tested without a server.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "result.h"

namespace tcptrace {

struct WebTls {
  // Absolute paths: a relative path in the file is relative to the file's
  // own directory, as exporter-toolkit resolves it.
  std::string cert_file;
  std::string key_file;
};

struct WebConfig {
  std::string path;  // the file, as given
  std::optional<WebTls> tls;
  std::map<std::string, std::string> users;  // name -> bcrypt hash

  bool needs_auth() const { return !users.empty(); }
  // Whether `password` is `user`'s: libcrypt hashes it with the user's
  // bcrypt hash as the setting and the result is compared in constant time.
  // An unknown user costs one bcrypt run too, so the time taken does not
  // tell which names exist.
  bool verify(const std::string& user, const std::string& password) const;
};

// Reads and checks FILE. Every mistake is a usage error (exit 2) naming the
// file and the key: a missing or unparsable file, an unknown key (as
// exporter-toolkit rejects unknown fields), a key of the format this tool
// does not serve, a TLS section without both files, a certificate or key
// file that does not exist, a hash that is not bcrypt. A file that exists
// but cannot be read is a runtime error (exit 1). An empty file configures
// nothing, as in exporter-toolkit: plain HTTP without authentication.
Result<WebConfig> load_web_config(const std::string& path);

}  // namespace tcptrace
