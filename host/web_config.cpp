#include "web_config.h"

#include <crypt.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

namespace tcptrace {
namespace {

namespace fs = std::filesystem;

// exporter-toolkit's keys that this tool does not serve. Naming them apart
// from unknown keys tells a node_exporter user the setting is real but has
// no effect here, instead of "unknown" for a key they know.
const std::set<std::string> kUnservedKeys = {
    "tls_server_config.client_auth_type", "tls_server_config.client_ca_file",
    "tls_server_config.client_allowed_sans", "tls_server_config.cipher_suites",
    "tls_server_config.curve_preferences", "tls_server_config.min_version",
    "tls_server_config.max_version", "tls_server_config.prefer_server_cipher_suites",
    "http_server_config", "rate_limit",
};

class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  Error error(const YAML::Node& node, const std::string& message) const {
    return usage_error("--web-config " + path_ + ":" + std::to_string(node.Mark().line + 1) + ": " + message);
  }

  // Each key of the mapping `node` (at `where`, "" for the top) must be one
  // of `allowed`.
  Status check_keys(const YAML::Node& node, const std::string& where, const std::set<std::string>& allowed) const {
    if (!node.IsMap()) return error(node, (where.empty() ? "the file" : where) + " must be a mapping of keys");
    for (const auto& entry : node) {
      const std::string key = entry.first.Scalar();
      if (allowed.count(key)) continue;
      const std::string full = where.empty() ? key : where + "." + key;
      if (kUnservedKeys.count(full)) {
        return error(entry.first, "'" + full + "' is not supported by tcptrace-bcc (it serves " +
                                      "tls_server_config.cert_file, tls_server_config.key_file and basic_auth_users)");
      }
      return error(entry.first, "unknown key '" + full + "'");
    }
    return {};
  }

  Result<std::string> string_at(const YAML::Node& node, const std::string& key) const {
    if (!node.IsScalar()) return error(node, "'" + key + "' must be a string");
    return node.Scalar();
  }

 private:
  std::string path_;
};

// A bcrypt hash as libxcrypt reads it: "$2a$", "$2b$" or "$2y$", a two-digit
// cost, '$', then 53 characters of salt and digest.
bool looks_like_bcrypt(const std::string& hash) {
  if (hash.size() != 60 || hash[0] != '$' || hash[1] != '2' || hash[3] != '$' || hash[6] != '$') return false;
  if (hash[2] != 'a' && hash[2] != 'b' && hash[2] != 'y') return false;
  return hash[4] >= '0' && hash[4] <= '9' && hash[5] >= '0' && hash[5] <= '9';
}

// libcrypt's hash of `password` with `setting` (a whole stored hash: crypt
// takes the algorithm, cost and salt from its start), or "" on failure.
std::string crypt_with(const std::string& password, const std::string& setting) {
  // struct crypt_data is about 32 KiB: on the heap, not on a server
  // worker's stack.
  auto data = std::make_unique<crypt_data>();
  const char* out = crypt_rn(password.c_str(), setting.c_str(), data.get(), sizeof *data);
  // On failure crypt_rn returns NULL; libxcrypt's "failure tokens" start
  // with '*', which no hash does.
  if (out == nullptr || out[0] == '*') return "";
  return out;
}

// Equal-length strings compared without an early exit, so the time taken
// does not say how many leading bytes matched.
bool equal_in_constant_time(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ |= static_cast<unsigned char>(a[i] ^ b[i]);
  return differ == 0;
}

}  // namespace

bool WebConfig::verify(const std::string& user, const std::string& password) const {
  if (users.empty()) return false;
  const auto it = users.find(user);
  // A password with a NUL byte cannot reach crypt intact; Basic credentials
  // never need one.
  const bool usable = password.find('\0') == std::string::npos;
  const std::string& hash = it != users.end() ? it->second : users.begin()->second;
  const std::string computed = crypt_with(usable ? password : std::string(), hash);
  const bool match = !computed.empty() && equal_in_constant_time(computed, hash);
  return it != users.end() && usable && match;
}

Result<WebConfig> load_web_config(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) return usage_error("--web-config: '" + path + "' does not exist");
  if (fs::is_directory(status)) return usage_error("--web-config: '" + path + "' is a directory");
  std::ifstream file(path);
  if (!file) return runtime_error("--web-config: cannot read '" + path + "': " + std::strerror(errno));
  std::stringstream text;
  text << file.rdbuf();

  WebConfig config;
  config.path = path;
  const Reader reader(path);
  YAML::Node document;
  try {
    document = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    return usage_error("--web-config " + path + ":" + std::to_string(e.mark.line + 1) + ": not YAML: " + e.msg);
  }
  // Read through a const node: yaml-cpp's non-const operator[] adds the
  // key it looks up.
  const YAML::Node& root = document;
  // An empty file (or one of comments) is a null document: nothing set.
  if (root.IsNull()) return config;
  if (Status s = reader.check_keys(root, "", {"tls_server_config", "basic_auth_users"}); !s) {
    return std::move(s).take_error();
  }
  // Relative files are found beside the config file, wherever the tool runs.
  const fs::path base = fs::absolute(fs::path(path), ec).parent_path();

  if (const YAML::Node tls = root["tls_server_config"]; tls && !tls.IsNull()) {
    if (Status s = reader.check_keys(tls, "tls_server_config", {"cert_file", "key_file"}); !s) {
      return std::move(s).take_error();
    }
    WebTls files;
    for (const char* key : {"cert_file", "key_file"}) {
      const std::string full = std::string("tls_server_config.") + key;
      if (!tls[key] || tls[key].IsNull()) return reader.error(tls, "'tls_server_config' needs '" + std::string(key) + "'");
      auto value = reader.string_at(tls[key], full);
      if (!value) return std::move(value).take_error();
      if (value->empty()) return reader.error(tls[key], "'" + full + "' is empty");
      const fs::path file_path = fs::path(*value).is_absolute() ? fs::path(*value) : base / *value;
      const fs::file_status file_status = fs::status(file_path, ec);
      if (ec || !fs::exists(file_status)) {
        return reader.error(tls[key], "'" + full + "': '" + file_path.string() + "' does not exist");
      }
      if (!fs::is_regular_file(file_status)) {
        return reader.error(tls[key], "'" + full + "': '" + file_path.string() + "' is not a file");
      }
      (std::string(key) == "cert_file" ? files.cert_file : files.key_file) = file_path.lexically_normal().string();
    }
    config.tls = std::move(files);
  }

  if (const YAML::Node users = root["basic_auth_users"]; users && !users.IsNull()) {
    if (!users.IsMap()) return reader.error(users, "'basic_auth_users' must map user names to bcrypt hashes");
    for (const auto& entry : users) {
      const std::string name = entry.first.Scalar();
      auto hash = reader.string_at(entry.second, "basic_auth_users." + name);
      if (!hash) return std::move(hash).take_error();
      // Checked once here, so that a hash libcrypt cannot use fails at
      // start, not as a 401 at every scrape.
      if (!looks_like_bcrypt(*hash) || crypt_with("", *hash).empty()) {
        return reader.error(entry.second, "'basic_auth_users." + name +
                                              "' is not a bcrypt hash ($2a$, $2b$ or $2y$, cost, salt and digest: "
                                              "60 characters)");
      }
      if (name.find(':') != std::string::npos) {
        // Basic credentials are "user:password" split at the first colon.
        return reader.error(entry.first, "user name '" + name + "' contains ':', which Basic authentication cannot send");
      }
      config.users[name] = *hash;
    }
  }
  return config;
}

}  // namespace tcptrace
