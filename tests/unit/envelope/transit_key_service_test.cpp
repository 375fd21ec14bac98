// TransitKeyService over a real TransitClient talking to a FakeHttpTransport, timed by a
// FakeClock: health before and after checks, staleness, rotation, key_id and key_version, and a
// background refresher that starts and stops without sleeping.
#include <catch2/catch.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "envelope/key_service.h"
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

std::string KeyBody(int latest) { return json{{"data", {{"latest_version", latest}}}}.dump(); }

TransitKeyServiceOptions Opts(std::string ns = "") {
  TransitKeyServiceOptions o;
  o.namespace_ = std::move(ns);
  o.refresh_period = 15s;
  o.stale_after = 45s;
  o.check_timeout = 5s;
  return o;
}

struct Fixture : fakes::TransitKeyServiceFixture {
  explicit Fixture(TransitKeyServiceOptions o = Opts()) : TransitKeyServiceFixture(std::move(o)) {}
};

// ---- health ---------------------------------------------------------------------------------

TEST_CASE("Health before any check says so and has no key_id", "[key_service][health]") {
  Fixture f;
  const HealthSnapshot h = f.keys.Health();
  CHECK(h.healthz == "no successful Vault check yet");
  CHECK(h.key_id.empty());
  CHECK(f.http.count() == 0);  // Health never calls Vault
}

TEST_CASE("Health after a good check is ok with the key_id", "[key_service][health]") {
  Fixture f;
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(3));
  f.keys.RefreshOnce();
  const HealthSnapshot h = f.keys.Health();
  CHECK(h.healthz == "ok");
  CHECK(h.key_id == "transit/kubernetes:v3");
  CHECK(f.keys.KeyIdFor(7) == "transit/kubernetes:v7");
  // The check's deadline is the clock's now plus check_timeout.
  CHECK(f.http.last().deadline == f.clock.Now() + 5s);
}

TEST_CASE("a Vault namespace is part of the key_id", "[key_service][health]") {
  Fixture f(Opts("team-a"));
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(2));
  f.keys.RefreshOnce();
  CHECK(f.keys.Health().key_id == "team-a/transit/kubernetes:v2");
}

TEST_CASE("Health after a failed first check gives the reason", "[key_service][health]") {
  Fixture f;
  f.http.Fail(Method::kGet, kKeys, absl::UnavailableError("vault https://a: cannot connect"));
  f.keys.RefreshOnce();
  const HealthSnapshot h = f.keys.Health();
  CHECK(h.healthz == "no successful Vault check yet: vault https://a: cannot connect");
  CHECK(h.key_id.empty());
}

TEST_CASE("Health after a failure that follows success is not ok, with the reason",
          "[key_service][health]") {
  Fixture f;
  fakes::LogCapture cap;
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(4));
  f.keys.RefreshOnce();
  REQUIRE(f.keys.Health().healthz == "ok");
  f.http.Respond(Method::kGet, kKeys, 503, R"({"errors":["Vault is sealed"]})");
  f.keys.RefreshOnce();
  const HealthSnapshot h = f.keys.Health();
  CHECK_THAT(h.healthz, StartsWith("last Vault check failed: "));
  CHECK_THAT(h.healthz, Contains("Vault is sealed"));
  CHECK(h.key_id == "transit/kubernetes:v4");  // the last known key stays visible
  // The same failure again is logged once, not on every check.
  f.keys.RefreshOnce();
  f.keys.RefreshOnce();
  size_t warns = 0;
  for (const auto& j : cap.events("health")) warns += j["level"] == "warn" ? 1 : 0;
  CHECK(warns == 1);
  // And it recovers.
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(4));
  f.keys.RefreshOnce();
  CHECK(f.keys.Health().healthz == "ok");
}

TEST_CASE("Health goes stale when no check succeeds within stale_after", "[key_service][health]") {
  Fixture f;
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(1));
  f.keys.RefreshOnce();
  f.clock.Advance(45s);
  CHECK(f.keys.Health().healthz == "ok");  // exactly stale_after is still fresh
  f.clock.Advance(1ms);
  const HealthSnapshot h = f.keys.Health();
  CHECK(h.healthz == "last successful Vault check is older than status.stale_after");
  CHECK(h.key_id == "transit/kubernetes:v1");
  f.keys.RefreshOnce();
  CHECK(f.keys.Health().healthz == "ok");
}

TEST_CASE("a malformed key answer is a failed check", "[key_service][health]") {
  Fixture f;
  f.http.Respond(Method::kGet, kKeys, 200, R"({"data":{"latest_version":0}})");
  f.keys.RefreshOnce();
  CHECK_THAT(f.keys.Health().healthz, Contains("latest_version"));
}

// ---- rotation and key_version ---------------------------------------------------------------

TEST_CASE("rotation: a new latest_version changes the key_id", "[key_service][rotation]") {
  Fixture f;
  fakes::LogCapture cap;
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(1));
  f.keys.RefreshOnce();
  CHECK(f.keys.Health().key_id == "transit/kubernetes:v1");
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(2));
  f.keys.RefreshOnce();
  CHECK(f.keys.Health().key_id == "transit/kubernetes:v2");
  auto ev = cap.events("key.version");
  REQUIRE(ev.size() == 2);
  CHECK(ev[0]["msg"] == "transit key found");
  CHECK(ev[1]["msg"] == "transit key rotated");
  CHECK(ev[1]["key_id"] == "transit/kubernetes:v2");
  CHECK(ev[1]["previous_key_id"] == "transit/kubernetes:v1");
}

TEST_CASE("Encrypt asks for the latest version known from the last check",
          "[key_service][rotation]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptBody(1));
  auto before = f.keys.Encrypt("seed", f.Soon());
  REQUIRE(before.ok());
  CHECK_FALSE(json::parse(f.http.last().body).contains("key_version"));  // none known yet

  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(2));
  f.keys.RefreshOnce();
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptBody(2));
  auto r = f.keys.Encrypt("seed", f.Soon());
  REQUIRE(r.ok());
  CHECK(json::parse(f.http.last().body)["key_version"] == 2);
  CHECK(r->key_id == "transit/kubernetes:v2");
  CHECK(r->key_id == f.keys.Health().key_id);  // Status and Encrypt agree
  CHECK(r->ciphertext == Ct(2));
  CHECK(r->node == "https://vault-a.test:8200");
  CHECK(r->annotations.empty());
}

TEST_CASE("Encrypt's key_id comes from the ciphertext Vault returned", "[key_service][rotation]") {
  Fixture f;
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(3));
  f.keys.RefreshOnce();
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptBody(5));  // rotated twice since the check
  auto r = f.keys.Encrypt("seed", f.Soon());
  REQUIRE(r.ok());
  CHECK(r->key_id == "transit/kubernetes:v5");
}

TEST_CASE("Encrypt refuses bad plaintext sizes before calling Vault", "[key_service][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptBody(1));
  auto empty = f.keys.Encrypt("", f.Soon());
  CHECK(empty.status().code() == absl::StatusCode::kInvalidArgument);
  auto big = f.keys.Encrypt(std::string(65537, 'p'), f.Soon());
  CHECK(big.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(f.http.count() == 0);
  auto max = f.keys.Encrypt(std::string(65536, 'p'), f.Soon());
  CHECK(max.ok());
  CHECK(f.http.count() == 1);
}

TEST_CASE("Encrypt passes Vault errors through", "[key_service][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 503, "{}");
  auto r = f.keys.Encrypt("seed", f.Soon());
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
}

// ---- Decrypt --------------------------------------------------------------------------------

TEST_CASE("Decrypt checks input, then unwraps through Vault", "[key_service]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 200,
                 json{{"data", {{"plaintext", base64::Encode("the-seed")}}}}.dump(),
                 "https://vault-b.test:8200");
  auto r = f.keys.Decrypt(Ct(1), "transit/kubernetes:v1", {{"kms.example.com", "x"}}, f.Soon());
  REQUIRE(r.ok());
  CHECK(r->plaintext.view() == "the-seed");
  CHECK(r->node == "https://vault-b.test:8200");
  CHECK(json::parse(f.http.last().body)["ciphertext"] == Ct(1));
  CHECK(f.http.last().deadline == f.Soon());

  // A key_id from another version (or none, as v1beta1 sends) still decrypts: Vault reads the
  // version from the ciphertext.
  CHECK(f.keys.Decrypt(Ct(1), "", {}, f.Soon()).ok());
}

TEST_CASE("Decrypt refuses bad input before calling Vault", "[key_service][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 200, R"({"data":{"plaintext":"eA=="}})");
  CHECK(f.keys.Decrypt("", "k", {}, f.Soon()).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(f.keys.Decrypt(Ct(1), std::string(1025, 'k'), {}, f.Soon()).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(f.keys.Decrypt(Ct(1), "k", {{"Bad", "v"}}, f.Soon()).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(f.http.count() == 0);
}

TEST_CASE("Decrypt maps Vault's too-old answer to FAILED_PRECONDITION", "[key_service][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 400,
                 R"j({"errors":["ciphertext or signature version is disallowed by policy (too old)"]})j");
  auto r = f.keys.Decrypt(Ct(1), "k", {}, f.Soon());
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
}

// ---- background refresher -------------------------------------------------------------------

TEST_CASE("the refresher checks at once, then every refresh_period", "[key_service][refresher]") {
  Fixture f;
  f.clock.set_blocking(true);
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(1));
  const auto t0 = f.clock.Now();
  f.keys.Start();
  REQUIRE(f.clock.WaitForWaits(1));
  CHECK(f.http.count(Method::kGet, kKeys) == 1);
  CHECK(f.keys.Health().healthz == "ok");
  CHECK(f.clock.last_until() == t0 + 15s);

  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(2));
  f.clock.Advance(10s);  // not yet due
  f.clock.Advance(5s);   // due
  REQUIRE(f.clock.WaitForWaits(2));
  CHECK(f.http.count(Method::kGet, kKeys) == 2);
  CHECK(f.keys.Health().key_id == "transit/kubernetes:v2");

  // A failed check: the next one comes after kRetryAfterFailure (10 s), not the 15 s period.
  f.http.Respond(Method::kGet, kKeys, 503, R"({"errors":["sealed"]})");
  const auto t2 = f.clock.Now();
  f.clock.Advance(15s);
  REQUIRE(f.clock.WaitForWaits(3));
  CHECK(f.http.count(Method::kGet, kKeys) == 3);
  CHECK(f.keys.Health().healthz != "ok");
  CHECK(f.clock.last_until() == t2 + 15s + kRetryAfterFailure);
  // Healthy again: back to the refresh period.
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(2));
  const auto t3 = f.clock.Now();
  f.clock.Advance(kRetryAfterFailure);
  REQUIRE(f.clock.WaitForWaits(4));
  CHECK(f.keys.Health().healthz == "ok");
  CHECK(f.clock.last_until() == t3 + kRetryAfterFailure + 15s);

  const auto real0 = std::chrono::steady_clock::now();
  f.keys.Stop();
  CHECK(std::chrono::steady_clock::now() - real0 < 5s);
  CHECK(f.http.count(Method::kGet, kKeys) == 4);
}

TEST_CASE("Stop ends a free-running refresher promptly", "[key_service][refresher]") {
  Fixture f;  // free-running clock: each wait jumps to its deadline
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(1));
  const auto t0 = f.clock.Now();
  f.keys.Start();
  f.keys.Start();  // a second Start is a no-op
  REQUIRE(f.clock.WaitForWaits(3));
  const auto real0 = std::chrono::steady_clock::now();
  f.keys.Stop();
  CHECK(std::chrono::steady_clock::now() - real0 < 5s);
  const size_t checks = f.http.count(Method::kGet, kKeys);
  CHECK(checks >= 3);
  CHECK(f.clock.Now() - t0 >= 30s);  // virtual time moved by refresh periods
  // Stopped means stopped.
  f.clock.Advance(1h);
  CHECK(f.http.count(Method::kGet, kKeys) == checks);
  f.keys.Stop();  // twice is fine
}

TEST_CASE("a stopped refresher can be started again; the destructor stops it",
          "[key_service][refresher]") {
  Fixture f;
  f.clock.set_blocking(true);
  f.http.Respond(Method::kGet, kKeys, 200, KeyBody(1));
  f.keys.Stop();  // before Start: nothing to stop
  f.keys.Start();
  REQUIRE(f.clock.WaitForWaits(1));
  f.keys.Stop();
  f.keys.Start();
  REQUIRE(f.clock.WaitForWaits(2));
  CHECK(f.http.count(Method::kGet, kKeys) == 2);
  // Fixture destruction joins the running thread.
}

}  // namespace
}  // namespace trousseau::envelope
