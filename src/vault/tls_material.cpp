#include "vault/tls_material.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "hardening/secret_file.h"

namespace trousseau::vault {
namespace {

constexpr size_t kMaxPemBytes = 1 << 20;

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

// Reads every certificate in a PEM text. Zero certificates is an error naming `path`.
absl::StatusOr<std::vector<X509*>> ParseCertificates(const std::string& pem,
                                                     const std::string& path) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return absl::ResourceExhaustedError("out of memory reading " + path);
  std::vector<X509*> certs;
  for (;;) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (cert == nullptr) break;
    certs.push_back(cert);
  }
  // The loop ends on "no start line" at EOF; anything else is a malformed PEM block.
  const unsigned long err = ERR_peek_last_error();
  ERR_clear_error();
  if (certs.empty()) {
    return absl::InvalidArgumentError("no PEM certificate found in " + path);
  }
  if (err != 0 && ERR_GET_REASON(err) != PEM_R_NO_START_LINE) {
    for (X509* c : certs) X509_free(c);
    return absl::InvalidArgumentError("malformed PEM certificate in " + path);
  }
  return certs;
}

}  // namespace

TlsMaterial::~TlsMaterial() {
  for (X509* c : ca_) X509_free(c);
  for (X509* c : chain_) X509_free(c);
  EVP_PKEY_free(key_);
}

absl::StatusOr<std::shared_ptr<const TlsMaterial>> TlsMaterial::Load(
    const config::TlsConfig& tls) {
  std::shared_ptr<TlsMaterial> m(new TlsMaterial());
  auto ca_pem = ReadTextFile(tls.ca_file, kMaxPemBytes);
  if (!ca_pem.ok()) return absl::Status(ca_pem.status().code(), "vault.tls.ca_file: " + std::string(ca_pem.status().message()));
  auto ca = ParseCertificates(*ca_pem, tls.ca_file);
  if (!ca.ok()) return absl::InvalidArgumentError("vault.tls.ca_file: " + std::string(ca.status().message()));
  m->ca_ = std::move(*ca);

  if (tls.client_cert_file.empty()) return std::shared_ptr<const TlsMaterial>(std::move(m));

  auto cert_pem = ReadTextFile(tls.client_cert_file, kMaxPemBytes);
  if (!cert_pem.ok()) return absl::Status(cert_pem.status().code(), "vault.tls.client_cert_file: " + std::string(cert_pem.status().message()));
  auto chain = ParseCertificates(*cert_pem, tls.client_cert_file);
  if (!chain.ok()) return absl::InvalidArgumentError("vault.tls.client_cert_file: " + std::string(chain.status().message()));
  m->chain_ = std::move(*chain);

  auto key_pem = ReadSecretFile(tls.client_key_file, kMaxPemBytes);
  if (!key_pem.ok()) return absl::Status(key_pem.status().code(), "vault.tls.client_key_file: " + std::string(key_pem.status().message()));
  {
    BioPtr bio(BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())));
    m->key_ = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr;
  }
  key_pem->clear();
  ERR_clear_error();
  if (m->key_ == nullptr) {
    return absl::InvalidArgumentError("vault.tls.client_key_file: no usable PEM private key in " +
                                      tls.client_key_file + " (encrypted keys are not supported)");
  }
  if (X509_check_private_key(m->chain_.front(), m->key_) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("vault.tls.client_key_file: the key in " +
                                      tls.client_key_file + " does not match the certificate in " +
                                      tls.client_cert_file);
  }
  return std::shared_ptr<const TlsMaterial>(std::move(m));
}

bool TlsMaterial::ApplyTo(SSL_CTX* ctx) const {
  // A fresh store holding only the pinned CA: whatever libcurl loaded by default is dropped.
  X509_STORE* store = X509_STORE_new();
  if (store == nullptr) return false;
  for (X509* c : ca_) {
    if (X509_STORE_add_cert(store, c) != 1) {
      X509_STORE_free(store);
      return false;
    }
  }
  SSL_CTX_set_cert_store(ctx, store);  // takes ownership, frees the old store
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // Free (and so wipe) TLS record buffers when idle: a kept-alive connection would otherwise
  // hold the last decrypted record, which may carry a Transit answer.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (key_ == nullptr) return true;
  if (SSL_CTX_use_certificate(ctx, chain_.front()) != 1) return false;
  for (size_t i = 1; i < chain_.size(); ++i) {
    X509_up_ref(chain_[i]);
    if (SSL_CTX_add0_chain_cert(ctx, chain_[i]) != 1) {
      X509_free(chain_[i]);
      return false;
    }
  }
  if (SSL_CTX_use_PrivateKey(ctx, key_) != 1) return false;
  return SSL_CTX_check_private_key(ctx) == 1;
}

}  // namespace trousseau::vault
