// TLS for the tests of --web-config: certificates made at test time with the
// openssl command, and an HTTPS GET that checks the server's certificate.
#pragma once

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "http_get.h"

namespace tcptrace::testing {

// A self-signed P-256 certificate valid for a day, for the DNS name `name`
// and 127.0.0.1, and its key (unencrypted: the tool reads it unattended).
// True when openssl made both.
inline bool make_certificate(const std::filesystem::path& cert, const std::filesystem::path& key,
                             const std::string& name = "tcptrace-test") {
  const std::string command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
                              "-subj /CN=" + name + " -addext subjectAltName=DNS:" + name + ",IP:127.0.0.1 "
                              "-keyout '" + key.string() + "' -out '" + cert.string() + "' 2>/dev/null";
  return std::system(command.c_str()) == 0;
}

// "user:password" in base64, for an Authorization: Basic header.
inline std::string basic_credentials(const std::string& user, const std::string& password) {
  static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const std::string in = user + ":" + password;
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    const size_t n = std::min<size_t>(3, in.size() - i);
    uint32_t chunk = 0;
    for (size_t j = 0; j < 3; ++j) chunk = chunk << 8 | (j < n ? static_cast<unsigned char>(in[i + j]) : 0);
    for (size_t j = 0; j < 4; ++j) out += j <= n ? digits[(chunk >> (18 - 6 * j)) & 63] : '=';
  }
  return out;
}

// GET https://127.0.0.1:port<target>, trusting only `ca_file` and checking
// that the certificate names `name`. status 0 when the connection or the
// handshake fails (`failure` then says why).
inline HttpResponse https_get(uint16_t port, const std::string& target, const std::string& ca_file,
                              const std::string& name, const std::string& extra_headers = "",
                              std::string* failure = nullptr) {
  HttpResponse response;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr);
  const int fd = connect_local_port(port);
  SSL* ssl = SSL_new(ctx);
  std::string raw;
  if (fd >= 0) {
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, name.c_str());
    SSL_set1_host(ssl, name.c_str());
    if (SSL_connect(ssl) == 1) {
      const std::string request = "GET " + target + " HTTP/1.0\r\nHost: " + name + "\r\n" + extra_headers + "\r\n";
      SSL_write(ssl, request.data(), static_cast<int>(request.size()));
      char buffer[8192];
      int n;
      while ((n = SSL_read(ssl, buffer, sizeof buffer)) > 0) raw.append(buffer, static_cast<size_t>(n));
    } else if (failure != nullptr) {
      char text[256];
      ERR_error_string_n(ERR_get_error(), text, sizeof text);
      *failure = text;
    }
  } else if (failure != nullptr) {
    *failure = "connect failed";
  }
  SSL_free(ssl);
  if (fd >= 0) ::close(fd);
  SSL_CTX_free(ctx);
  return parse_http_response(raw);
}

}  // namespace tcptrace::testing
