// TLS trust and identity, read once at start (before privileges are dropped) and held in
// memory: the pinned CA bundle, and the optional client certificate chain and private key.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "config/config.h"

typedef struct x509_st X509;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct ssl_ctx_st SSL_CTX;

namespace trousseau::vault {

class TlsMaterial {
 public:
  // Reads and parses the files named in `tls`. Errors name the file and the problem, never
  // the contents. The private key's file bytes are held in a SecretBuffer and wiped after
  // parsing; the parsed key lives in OpenSSL's memory (see SECURITY.md).
  static absl::StatusOr<std::shared_ptr<const TlsMaterial>> Load(const config::TlsConfig& tls);

  ~TlsMaterial();
  TlsMaterial(const TlsMaterial&) = delete;
  TlsMaterial& operator=(const TlsMaterial&) = delete;

  // Replaces ctx's trust store with only our CA certificates, and installs the client identity.
  // Called from libcurl's SSL_CTX callback for every new TLS context.
  bool ApplyTo(SSL_CTX* ctx) const;

  size_t ca_count() const { return ca_.size(); }
  bool has_client_identity() const { return key_ != nullptr; }

 private:
  TlsMaterial() = default;
  std::vector<X509*> ca_;
  std::vector<X509*> chain_;  // leaf first
  EVP_PKEY* key_ = nullptr;
};

}  // namespace trousseau::vault
