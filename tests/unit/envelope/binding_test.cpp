// Cluster binding (docs/formats.md section 3) and key rollback detection (docs/rollback.md):
// the pure parts, then TransitKeyService over a real TransitClient and a FakeHttpTransport,
// checking what is sent to Transit (associated_data), what comes back (annotation, key_id) and
// the codes and messages of every refusal.
#include <catch2/catch.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "common/base64.h"
#include "envelope/binding.h"
#include "envelope/key_service.h"
#include "envelope/rollback.h"
#include "fakes/log_capture.h"
#include "fakes/transit_key_service_fixture.h"

namespace trousseau::envelope {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using Catch::StartsWith;
using fakes::Ct;
using fakes::EncryptBody;
using fakes::kDecrypt;
using fakes::kEncrypt;
using fakes::kKeys;
using fakes::Method;
using nlohmann::json;

std::string KeyBody(int latest, json created = json::object(), std::string type = "aes256-gcm96") {
  if (created.empty()) {
    for (int v = 1; v <= latest; ++v) created[std::to_string(v)] = 1700000000 + v;
  }
  return json{{"data", {{"latest_version", latest}, {"type", type}, {"keys", created}}}}.dump();
}
std::string DecryptBody() {
  return json{{"data", {{"plaintext", base64::Encode(std::string(32, 's'))}}}}.dump();
}
const char* kAuthFailed = R"({"errors":["cipher: message authentication failed"]})";

TransitKeyServiceOptions Opts(std::string cluster = "", bool strict = false, bool write = true) {
  TransitKeyServiceOptions o;
  o.binding.cluster_id = std::move(cluster);
  o.binding.strict = strict;
  o.binding.write = write;
  return o;
}

struct Fixture : fakes::TransitKeyServiceFixture {
  explicit Fixture(TransitKeyServiceOptions o) : TransitKeyServiceFixture(std::move(o)) {}
  json LastBody() const { return json::parse(http.last().body); }
};

std::string Aad(const std::string& cluster) {
  return base64::Encode(BindingAadV1(cluster, "transit/kubernetes"));
}

// ---- pure parts -----------------------------------------------------------------------------

TEST_CASE("the v1 AAD layout and annotation value are fixed", "[binding]") {
  // These bytes are a stored format: changing them would make every bound seed unreadable.
  CHECK(BindingAadV1("prod-1", "ns/transit/k") ==
        std::string("trousseau-binding-v1\0prod-1\0ns/transit/k", 20 + 1 + 6 + 1 + 12));
  CHECK(BindingAnnotationV1("prod-1") == "1;cluster=prod-1");
  CHECK(IsFqdn(kBindingAnnotation));
}

TEST_CASE("cluster ids are validated", "[binding]") {
  CHECK(ValidateClusterId("prod-eu-1.example:a_b").ok());
  CHECK(ValidateClusterId(std::string(128, 'a')).ok());
  CHECK_THAT(std::string(ValidateClusterId("").message()), Contains("empty"));
  CHECK_THAT(std::string(ValidateClusterId(std::string(129, 'a')).message()), Contains("limit is 128"));
  CHECK_THAT(std::string(ValidateClusterId("a b").message()), Contains("outside"));
  CHECK_FALSE(ValidateClusterId(std::string("a\0b", 3)).ok());
}

TEST_CASE("binding annotations parse, and unknown versions are refused by name", "[binding]") {
  auto p = ParseBindingAnnotation("1;cluster=prod-1");
  REQUIRE(p.ok());
  CHECK(p->version == 1);
  CHECK(p->writer_cluster == "prod-1");
  auto bare = ParseBindingAnnotation("1");
  REQUIRE(bare.ok());
  CHECK(bare->writer_cluster.empty());
  // A writer cluster that is not a valid id is not echoed.
  auto odd = ParseBindingAnnotation("1;cluster=a b\"c");
  REQUIRE(odd.ok());
  CHECK(odd->writer_cluster.empty());
  auto v2 = ParseBindingAnnotation("2;cluster=x");
  CHECK(v2.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(v2.status().message()), Contains("binding version 2 is unknown"));
  CHECK_THAT(std::string(v2.status().message()), Contains("aad.trousseau.io"));
  for (const char* bad : {"", ";cluster=x", "x", "01x", "1234567890", "-1"}) {
    CAPTURE(bad);
    auto r = ParseBindingAnnotation(bad);
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("AEAD key types are the ones OpenBao binds", "[binding]") {
  for (const char* t : {"aes256-gcm96", "aes128-gcm96", "chacha20-poly1305", "xchacha20-poly1305"}) {
    CHECK(KeyTypeSupportsAad(t));
  }
  for (const char* t : {"rsa-2048", "rsa-4096", "ed25519", "ecdsa-p256", "hmac", "", "managed_key"}) {
    CHECK_FALSE(KeyTypeSupportsAad(t));
  }
}

// ---- bound Encrypt / Decrypt ----------------------------------------------------------------

TEST_CASE("without binding nothing changes: no AAD, no annotation, plain key_id", "[binding]") {
  Fixture f(Opts());
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(3));
  f.keys.RefreshOnce();
  CHECK(f.keys.Health().key_id == "transit/kubernetes:v3");
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptBody(3));
  auto r = f.keys.Encrypt(std::string(32, 's'), f.Soon());
  REQUIRE(r.ok());
  CHECK_FALSE(f.LastBody().contains("associated_data"));
  CHECK(r->annotations.empty());
  CHECK(r->key_id == "transit/kubernetes:v3");
}

TEST_CASE("a bound Encrypt sends the AAD and returns the annotation and the +aad1 key_id",
          "[binding]") {
  Fixture f(Opts("cluster-a"));
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(3));
  f.keys.RefreshOnce();
  CHECK(f.keys.Health().healthz == "ok");
  CHECK(f.keys.Health().key_id == "transit/kubernetes:v3+aad1");
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptBody(3));
  auto r = f.keys.Encrypt(std::string(32, 's'), f.Soon());
  REQUIRE(r.ok());
  CHECK(f.LastBody()["associated_data"] == Aad("cluster-a"));
  CHECK(r->key_id == "transit/kubernetes:v3+aad1");
  REQUIRE(r->annotations.size() == 1);
  CHECK(r->annotations.at("aad.trousseau.io") == "1;cluster=cluster-a");
  CHECK(r->ciphertext == Ct(3));  // the ciphertext itself is Transit's, unchanged
}

TEST_CASE("a bound Decrypt rebuilds the AAD; an unbound one sends none", "[binding]") {
  Fixture f(Opts("cluster-a"));
  f.http.Respond(Method::kPost, kDecrypt, 200, DecryptBody());
  auto r = f.keys.Decrypt(Ct(1), "transit/kubernetes:v1+aad1",
                          {{"aad.trousseau.io", "1;cluster=cluster-a"}}, f.Soon());
  REQUIRE(r.ok());
  CHECK(f.LastBody()["associated_data"] == Aad("cluster-a"));
  // Old ciphertexts (no annotation) still read, without AAD.
  auto old = f.keys.Decrypt(Ct(1), "transit/kubernetes:v1", {}, f.Soon());
  REQUIRE(old.ok());
  CHECK_FALSE(f.LastBody().contains("associated_data"));
}

TEST_CASE("a seed from another cluster fails with INVALID_ARGUMENT naming the binding",
          "[binding]") {
  Fixture f(Opts("cluster-a"));
  f.http.Respond(Method::kPost, kDecrypt, 400, kAuthFailed);
  auto r = f.keys.Decrypt(Ct(1), "transit/kubernetes:v1+aad1",
                          {{"aad.trousseau.io", "1;cluster=cluster-b"}}, f.Soon());
  REQUIRE(r.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string m(r.status().message());
  CHECK_THAT(m, StartsWith("binding mismatch: "));
  CHECK_THAT(m, Contains("written for cluster \"cluster-b\""));
  CHECK_THAT(m, Contains("cluster \"cluster-a\", key transit/kubernetes"));
  CHECK_THAT(m, Contains("message authentication failed"));
  // Still the AAD of *this* plugin: the annotation's cluster is never used to build it.
  CHECK(f.LastBody()["associated_data"] == Aad("cluster-a"));
}

TEST_CASE("Vault being down on a bound Decrypt stays UNAVAILABLE, not a mismatch", "[binding]") {
  Fixture f(Opts("cluster-a"));
  f.http.Respond(Method::kPost, kDecrypt, 503, R"({"errors":["Vault is sealed"]})");
  auto r = f.keys.Decrypt(Ct(1), "", {{"aad.trousseau.io", "1;cluster=cluster-a"}}, f.Soon());
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(r.status().message()), !Contains("binding mismatch"));
}

TEST_CASE("a bound seed without binding.cluster_id is FAILED_PRECONDITION, Vault not called",
          "[binding]") {
  Fixture f(Opts());
  auto r = f.keys.Decrypt(Ct(1), "", {{"aad.trousseau.io", "1;cluster=cluster-b"}}, f.Soon());
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(r.status().message()), Contains("binding.cluster_id is not configured"));
  CHECK_THAT(std::string(r.status().message()), Contains("\"cluster-b\""));
  CHECK(f.http.count() == 0);
}

TEST_CASE("an unknown binding version is INVALID_ARGUMENT, Vault not called", "[binding]") {
  Fixture f(Opts("cluster-a"));
  auto r = f.keys.Decrypt(Ct(1), "", {{"aad.trousseau.io", "7;cluster=x"}}, f.Soon());
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(r.status().message()), Contains("binding version 7"));
  CHECK(f.http.count() == 0);
}

TEST_CASE("strict mode refuses unbound seeds and v1beta1", "[binding]") {
  Fixture f(Opts("cluster-a", /*strict=*/true));
  auto r = f.keys.Decrypt(Ct(1), "transit/kubernetes:v1", {}, f.Soon());
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(r.status().message()), Contains("binding.strict"));
  auto v1e = f.keys.V1Beta1View().Encrypt("data", f.Soon());
  CHECK(v1e.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(v1e.status().message()), Contains("v1beta1"));
  auto v1d = f.keys.V1Beta1View().Decrypt(Ct(1), "", {}, f.Soon());
  CHECK(v1d.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(f.http.count() == 0);
  // Bound seeds still read.
  f.http.Respond(Method::kPost, kDecrypt, 200, DecryptBody());
  CHECK(f.keys.Decrypt(Ct(1), "", {{"aad.trousseau.io", "1;cluster=cluster-a"}}, f.Soon()).ok());
}

TEST_CASE("v1beta1 never binds, even with binding on", "[binding]") {
  Fixture f(Opts("cluster-a"));
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(2));
  f.keys.RefreshOnce();
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptBody(2));
  auto r = f.keys.V1Beta1View().Encrypt("data", f.Soon());
  REQUIRE(r.ok());
  CHECK_FALSE(f.LastBody().contains("associated_data"));
  CHECK(r->annotations.empty());
  CHECK(r->key_id == "transit/kubernetes:v2");
}

TEST_CASE("binding.write false reads bound seeds but writes unbound ones", "[binding]") {
  Fixture f(Opts("cluster-a", false, /*write=*/false));
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(2));
  f.keys.RefreshOnce();
  CHECK(f.keys.Health().key_id == "transit/kubernetes:v2");
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptBody(2));
  auto r = f.keys.Encrypt(std::string(32, 's'), f.Soon());
  REQUIRE(r.ok());
  CHECK(r->annotations.empty());
  CHECK_FALSE(f.LastBody().contains("associated_data"));
  f.http.Respond(Method::kPost, kDecrypt, 200, DecryptBody());
  REQUIRE(f.keys.Decrypt(Ct(1), "", {{"aad.trousseau.io", "1;cluster=cluster-a"}}, f.Soon()).ok());
  CHECK(f.LastBody()["associated_data"] == Aad("cluster-a"));
}

TEST_CASE("binding on a key type without AEAD: unhealthy and Encrypt refused", "[binding]") {
  Fixture f(Opts("cluster-a"));
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(1, json::object(), "rsa-2048"));
  f.keys.RefreshOnce();
  CHECK_THAT(f.keys.Health().healthz, Contains("type \"rsa-2048\""));
  auto r = f.keys.Encrypt(std::string(32, 's'), f.Soon());
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(f.http.count() == 1);  // only the key read
}

// ---- rollback -------------------------------------------------------------------------------

vault::KeyInfo Info(int64_t latest, std::map<int64_t, std::string> created) {
  vault::KeyInfo i;
  i.latest_version = latest;
  i.created = std::move(created);
  return i;
}

TEST_CASE("RollbackGuard: forward is fine, lower or recreated is named", "[rollback]") {
  RollbackGuard g;
  CHECK(g.Observe(Info(1, {{1, "100"}}), "transit/k").empty());
  CHECK(g.Observe(Info(2, {{1, "100"}, {2, "200"}}), "transit/k").empty());
  CHECK(g.high_version() == 2);
  // Trimmed versions (absent from the map) are not a problem.
  CHECK(g.Observe(Info(3, {{3, "300"}}), "transit/k").empty());
  const std::string lower = g.Observe(Info(2, {{1, "100"}, {2, "200"}}), "transit/k");
  CHECK_THAT(lower, Contains("rolled back: Vault reports latest version 2, but version 3"));
  CHECK_THAT(lower, Contains("docs/rollback.md"));
  CHECK(g.high_version() == 3);  // nothing recorded from the bad answer
  const std::string recreated = g.Observe(Info(3, {{1, "999"}, {2, "200"}, {3, "300"}}), "transit/k");
  CHECK_THAT(recreated, Contains("replaced: version 1 now has creation time 999, but it was 100"));
  // Same version number, other creation time: restored then rotated again.
  const std::string rerotated = g.Observe(Info(3, {{1, "100"}, {2, "200"}, {3, "301"}}), "transit/k");
  CHECK_THAT(rerotated, Contains("version 3"));
  CHECK(g.Observe(Info(3, {{1, "100"}, {2, "200"}, {3, "300"}}), "transit/k").empty());
}

TEST_CASE("a rolled-back key refuses Encrypt, turns Status unhealthy, counts, and recovers",
          "[rollback]") {
  Fixture f(Opts());
  fakes::LogCapture cap;
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(3));
  f.keys.RefreshOnce();
  REQUIRE(f.keys.Health().healthz == "ok");
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(2));
  f.keys.RefreshOnce();
  f.keys.RefreshOnce();
  const HealthSnapshot h = f.keys.Health();
  CHECK_THAT(h.healthz, Contains("rolled back"));
  CHECK(h.key_id == "transit/kubernetes:v3");  // the high-water key stays visible
  CHECK(f.keys.State().rollbacks_detected == 1);  // counted once, not per check
  CHECK(f.keys.State().rollback_active);
  f.http.ClearRequests();
  auto r = f.keys.Encrypt(std::string(32, 's'), f.Soon());
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(r.status().message()), Contains("Encrypt is refused"));
  CHECK(f.http.count() == 0);
  // Decrypt of existing ciphertexts continues.
  f.http.Respond(Method::kPost, kDecrypt, 200, DecryptBody());
  CHECK(f.keys.Decrypt(Ct(1), "", {}, f.Soon()).ok());
  size_t errors = 0;
  for (const auto& j : cap.events("key.rollback")) errors += j["level"] == "error" ? 1 : 0;
  CHECK(errors == 1);
  // Vault back at (or beyond) what was seen: Encrypt allowed again.
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(4));
  f.keys.RefreshOnce();
  CHECK(f.keys.Health().healthz == "ok");
  CHECK_FALSE(f.keys.State().rollback_active);
  CHECK(f.keys.State().rollbacks_detected == 1);
}

TEST_CASE("a key deleted and recreated (same version, new creation time) is refused", "[rollback]") {
  Fixture f(Opts());
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(1, json{{"1", 1700000001}}));
  f.keys.RefreshOnce();
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(1, json{{"1", 1700000500}}));
  f.keys.RefreshOnce();
  CHECK_THAT(f.keys.Health().healthz, Contains("replaced: version 1"));
  CHECK(f.keys.Encrypt(std::string(32, 's'), f.Soon()).status().code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("asymmetric keys' creation_time objects are read", "[rollback]") {
  Fixture f(Opts());
  f.http.Respond(Method::kGet, kKeys, 200,
                 KeyBody(1, json{{"1", {{"creation_time", "2026-12-01T00:00:00Z"}}}}, "rsa-2048"));
  f.keys.RefreshOnce();
  f.http.Respond(Method::kGet, kKeys, 200,
                 KeyBody(1, json{{"1", {{"creation_time", "2026-12-02T00:00:00Z"}}}}, "rsa-2048"));
  f.keys.RefreshOnce();
  CHECK_THAT(f.keys.Health().healthz, Contains("2026-12-01T00:00:00Z"));
}

}  // namespace
}  // namespace trousseau::envelope
