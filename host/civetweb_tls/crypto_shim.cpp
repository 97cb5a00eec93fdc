// Built as libcrypto.so (that soname) beside the libssl.so shim: civetweb
// also dlopens "libcrypto.so", a name only Debian's libssl-dev package
// provides. Loaded by the executable, this library answers that dlopen and
// its dependency, the real libcrypto.so.3, every dlsym; it defines nothing
// of its own but this marker.
extern "C" {
extern const int tcptrace_civetweb_crypto;
const int tcptrace_civetweb_crypto = 1;
}
