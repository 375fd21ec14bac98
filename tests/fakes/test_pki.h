// TestPki: a throwaway CA, a server/client certificate it signs and their EC P-256 keys, made at
// test time with OpenSSL's C API (no checked-in key material). Header-only; link OpenSSL.
#pragma once

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <stdexcept>
#include <string>

namespace trousseau::fakes {

struct TestPki {
  std::string ca_pem;          // self-signed CA certificate
  std::string ca2_pem;         // a second, unrelated CA certificate
  std::string cert_pem;        // leaf signed by the CA (CN=localhost, SAN localhost, 127.0.0.1)
  std::string key_pem;         // the leaf's private key (PKCS#8 PEM)
  std::string other_key_pem;   // a key that matches no certificate here
};

namespace pki_detail {

inline std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

// EVP_PKEY_CTX keygen rather than OpenSSL 3's EVP_EC_gen: the subset BoringSSL shares (issue 11).
inline EVP_PKEY* NewKey() {
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr);
  EVP_PKEY* k = nullptr;
  const bool ok = ctx != nullptr && EVP_PKEY_keygen_init(ctx) == 1 &&
                  EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx, NID_X9_62_prime256v1) == 1 &&
                  EVP_PKEY_keygen(ctx, &k) == 1;
  EVP_PKEY_CTX_free(ctx);
  if (!ok) throw std::runtime_error("P-256 key generation failed");
  return k;
}

inline void AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value);  // in both; BoringSSL lacks _conf_nid
  if (ext == nullptr) throw std::runtime_error("X509V3_EXT_nconf_nid failed");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// issuer == nullptr: self-signed with `key`.
inline X509* NewCert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key, bool ca,
                     long serial) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
  X509* iss = issuer ? issuer : x;
  if (ca) {
    AddExt(x, iss, NID_basic_constraints, "critical,CA:TRUE");
    AddExt(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExt(x, iss, NID_basic_constraints, "CA:FALSE");
    AddExt(x, iss, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  }
  if (X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) == 0) {
    X509_free(x);
    throw std::runtime_error("X509_sign failed");
  }
  return x;
}

inline std::string CertPem(X509* x) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  std::string s = BioText(b);
  BIO_free(b);
  return s;
}

inline std::string KeyPem(EVP_PKEY* k) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr);
  std::string s = BioText(b);
  BIO_free(b);
  return s;
}

inline TestPki Make() {
  TestPki p;
  EVP_PKEY* ca_key = NewKey();
  EVP_PKEY* ca2_key = NewKey();
  EVP_PKEY* leaf_key = NewKey();
  EVP_PKEY* other_key = NewKey();
  X509* ca = NewCert(ca_key, "trousseau unit test CA", nullptr, nullptr, true, 1);
  X509* ca2 = NewCert(ca2_key, "trousseau unit test other CA", nullptr, nullptr, true, 2);
  X509* leaf = NewCert(leaf_key, "localhost", ca, ca_key, false, 3);
  p.ca_pem = CertPem(ca);
  p.ca2_pem = CertPem(ca2);
  p.cert_pem = CertPem(leaf);
  p.key_pem = KeyPem(leaf_key);
  p.other_key_pem = KeyPem(other_key);
  X509_free(ca);
  X509_free(ca2);
  X509_free(leaf);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(ca2_key);
  EVP_PKEY_free(leaf_key);
  EVP_PKEY_free(other_key);
  return p;
}

}  // namespace pki_detail

// Made once per test process.
inline const TestPki& GetTestPki() {
  static const TestPki pki = pki_detail::Make();
  return pki;
}

}  // namespace trousseau::fakes
