#include "common/tls_library.h"

#include <openssl/crypto.h>

namespace trousseau::common {

#if defined(OPENSSL_IS_BORINGSSL)
#if !defined(TROUSSEAU_BORINGSSL_VERSION)
#error "BoringSSL build without TROUSSEAU_BORINGSSL_VERSION (CMakeLists.txt sets it from scripts/build-boringssl)"
#endif
// BoringSSL has no version number of its own (OpenSSL_version says "BoringSSL"): the Debian
// source version it was built from names it.
std::string TlsLibraryVersion() { return std::string("BoringSSL ") + TROUSSEAU_BORINGSSL_VERSION; }
const char* TlsLibraryLinkage() { return "static"; }
#else
std::string TlsLibraryVersion() { return OpenSSL_version(OPENSSL_VERSION); }
const char* TlsLibraryLinkage() { return "shared"; }
#endif

}  // namespace trousseau::common
