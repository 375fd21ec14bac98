// TlsMaterial::Load with a CA, certificate and key made at test time (EC P-256).
#include "vault/tls_material.h"

#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <string>

#include "fakes/temp_dir.h"
#include "fakes/test_pki.h"

namespace trousseau::vault {
namespace {

using Catch::Contains;
using fakes::GetTestPki;
using fakes::TempDir;

struct Files {
  TempDir dir;
  std::string ca, cert, key, other_key;
  Files() {
    const auto& pki = GetTestPki();
    ca = dir.Write("ca.pem", pki.ca_pem);
    cert = dir.Write("client.pem", pki.cert_pem);
    key = dir.Write("client-key.pem", pki.key_pem);
    other_key = dir.Write("other-key.pem", pki.other_key_pem);
  }
  config::TlsConfig Tls(bool client = true) const {
    config::TlsConfig t;
    t.ca_file = ca;
    if (client) {
      t.client_cert_file = cert;
      t.client_key_file = key;
    }
    return t;
  }
};

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST_CASE("TlsMaterial loads a CA only", "[tls]") {
  Files f;
  auto m = TlsMaterial::Load(f.Tls(false));
  REQUIRE(m.ok());
  CHECK((*m)->ca_count() == 1);
  CHECK_FALSE((*m)->has_client_identity());
}

TEST_CASE("TlsMaterial loads a CA bundle and a client identity", "[tls]") {
  Files f;
  const auto& pki = GetTestPki();
  f.dir.Write("ca.pem", "# bundle\n" + pki.ca_pem + "\n" + pki.ca2_pem);
  auto m = TlsMaterial::Load(f.Tls());
  REQUIRE(m.ok());
  CHECK((*m)->ca_count() == 2);
  CHECK((*m)->has_client_identity());
}

TEST_CASE("TlsMaterial::ApplyTo installs the CA store and the identity", "[tls]") {
  Files f;
  auto m = TlsMaterial::Load(f.Tls());
  REQUIRE(m.ok());
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  REQUIRE(ctx != nullptr);
  CHECK((*m)->ApplyTo(ctx));
  CHECK(SSL_CTX_get0_certificate(ctx) != nullptr);
  CHECK(SSL_CTX_get_min_proto_version(ctx) == TLS1_2_VERSION);
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  REQUIRE(store != nullptr);
  STACK_OF(X509_OBJECT)* objs = X509_STORE_get0_objects(store);
  CHECK(sk_X509_OBJECT_num(objs) == 1);  // only the pinned CA, nothing from the system
  // Applying twice (libcurl may build several contexts) works too.
  CHECK((*m)->ApplyTo(ctx));
  SSL_CTX_free(ctx);
}

TEST_CASE("TlsMaterial: a CA file without a certificate is refused", "[tls][negative]") {
  Files f;
  for (const std::string& content :
       {std::string(""), std::string("just text\n"), GetTestPki().key_pem}) {
    f.dir.Write("ca.pem", content);
    auto m = TlsMaterial::Load(f.Tls(false));
    REQUIRE_FALSE(m.ok());
    CHECK(m.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(Msg(m.status()), Contains("vault.tls.ca_file: no PEM certificate found in " + f.ca));
    CHECK(Msg(m.status()).find("PRIVATE KEY") == std::string::npos);
  }
}

TEST_CASE("TlsMaterial: garbage PEM is refused", "[tls][negative]") {
  Files f;
  const std::string garbage =
      "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGUgYXQgYWxs!!\n-----END CERTIFICATE-----\n";
  f.dir.Write("ca.pem", garbage);
  auto m = TlsMaterial::Load(f.Tls(false));
  REQUIRE_FALSE(m.ok());
  CHECK(m.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Msg(m.status()), Contains(f.ca));

  // A good certificate followed by a broken block is not silently half-read.
  f.dir.Write("ca.pem", GetTestPki().ca_pem + garbage);
  auto half = TlsMaterial::Load(f.Tls(false));
  REQUIRE_FALSE(half.ok());
  CHECK_THAT(Msg(half.status()), Contains("malformed PEM certificate in " + f.ca));

  f.dir.Write("client.pem", garbage);
  f.dir.Write("ca.pem", GetTestPki().ca_pem);
  auto cert = TlsMaterial::Load(f.Tls());
  REQUIRE_FALSE(cert.ok());
  CHECK_THAT(Msg(cert.status()), Contains("vault.tls.client_cert_file"));
  CHECK_THAT(Msg(cert.status()), Contains(f.cert));
}

TEST_CASE("TlsMaterial: an unusable private key is refused without echoing it",
          "[tls][negative]") {
  Files f;
  f.dir.Write("client-key.pem", "-----BEGIN PRIVATE KEY-----\nU0VDUkVULUtFWQ==\n-----END PRIVATE KEY-----\n");
  auto m = TlsMaterial::Load(f.Tls());
  REQUIRE_FALSE(m.ok());
  CHECK(m.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Msg(m.status()), Contains("no usable PEM private key in " + f.key));
  CHECK(Msg(m.status()).find("U0VDUkVULUtFWQ") == std::string::npos);
}

TEST_CASE("TlsMaterial: a key that does not match the certificate names both files",
          "[tls][negative]") {
  Files f;
  config::TlsConfig t = f.Tls();
  t.client_key_file = f.other_key;
  auto m = TlsMaterial::Load(t);
  REQUIRE_FALSE(m.ok());
  CHECK(m.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Msg(m.status()), Contains("does not match"));
  CHECK_THAT(Msg(m.status()), Contains(f.other_key));
  CHECK_THAT(Msg(m.status()), Contains(f.cert));
  CHECK(Msg(m.status()).find("BEGIN") == std::string::npos);
}

TEST_CASE("TlsMaterial: a missing file is named", "[tls][negative]") {
  Files f;
  {
    config::TlsConfig t = f.Tls();
    t.ca_file = f.dir.Path("no-ca.pem");
    auto m = TlsMaterial::Load(t);
    REQUIRE_FALSE(m.ok());
    CHECK(m.status().code() == absl::StatusCode::kNotFound);
    CHECK_THAT(Msg(m.status()), Contains("vault.tls.ca_file"));
    CHECK_THAT(Msg(m.status()), Contains(t.ca_file));
  }
  {
    config::TlsConfig t = f.Tls();
    t.client_cert_file = f.dir.Path("no-cert.pem");
    auto m = TlsMaterial::Load(t);
    REQUIRE_FALSE(m.ok());
    CHECK(m.status().code() == absl::StatusCode::kNotFound);
    CHECK_THAT(Msg(m.status()), Contains("vault.tls.client_cert_file"));
    CHECK_THAT(Msg(m.status()), Contains(t.client_cert_file));
  }
  {
    config::TlsConfig t = f.Tls();
    t.client_key_file = f.dir.Path("no-key.pem");
    auto m = TlsMaterial::Load(t);
    REQUIRE_FALSE(m.ok());
    CHECK(m.status().code() == absl::StatusCode::kNotFound);
    CHECK_THAT(Msg(m.status()), Contains("vault.tls.client_key_file"));
    CHECK_THAT(Msg(m.status()), Contains(t.client_key_file));
  }
}

}  // namespace
}  // namespace trousseau::vault
