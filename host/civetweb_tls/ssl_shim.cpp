// Built as libssl.so (that soname) in a directory of the tool's own, which
// the executable links and finds through its RUNPATH.
//
// Debian 12's civetweb is built against OpenSSL 1.1's API and loads OpenSSL
// at run time with dlopen("libssl.so") and dlsym() per function. OpenSSL 3
// no longer exports SSL_get_peer_certificate (a macro for
// SSL_get1_peer_certificate now), so civetweb's pointer to it stays NULL
// and every HTTPS connection crashes the worker that calls it after the
// handshake. glibc's dlopen returns an already loaded object whose soname
// equals the requested name, so civetweb gets this library, and dlsym on it
// searches it first and then its dependency, the real libssl.so.3.
#include <openssl/ssl.h>

#undef SSL_get_peer_certificate

// Same contract as OpenSSL 1.1's: a new reference, which civetweb frees.
extern "C" X509* SSL_get_peer_certificate(const SSL* ssl) { return SSL_get1_peer_certificate(ssl); }
