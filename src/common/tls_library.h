// The TLS library this binary was built with (issue 11: -DTROUSSEAU_TLS=openssl|boringssl), for
// `trousseau version` and trousseau_build_info{tls_library}.
#pragma once

#include <string>

namespace trousseau::common {

// "OpenSSL 3.0.19 27 Jan 2026" (the running libssl3's own string) or
// "BoringSSL 13.0.0+r24-2 (upstream 1530333b2558)" (the Debian source version it was built from).
std::string TlsLibraryVersion();
// "shared" (Debian's OpenSSL 3, updated by apt) or "static" (BoringSSL, rebuilt to update).
const char* TlsLibraryLinkage();

}  // namespace trousseau::common
