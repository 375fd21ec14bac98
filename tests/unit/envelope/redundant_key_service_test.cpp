// RedundantKeyService over two real TransitKeyServices, each with its own real TransitClient and
// a FakeTransitServer (one per "cluster", with different keys), timed by a FakeClock: double
// wrapping, the annotation, key_id, fallback only on loss, required / best_effort, and healing.
#include <catch2/catch.hpp>
#include <chrono>
#include <string>

#include "common/base64.h"
#include "envelope/binding.h"
#include "envelope/redundant_key_service.h"
#include "fakes/fake_clock.h"
#include "fakes/fake_token_source.h"
#include "fakes/fake_transit_server.h"

namespace trousseau::envelope {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using Catch::StartsWith;

const std::string kSeed(32, 's');

TransitKeyServiceOptions Opts(const std::string& cluster_id = "") {
  TransitKeyServiceOptions o;
  o.refresh_period = 15s;
  o.stale_after = 45s;
  o.check_timeout = 5s;
  o.batch_max_items = 1;  // one Vault call per request: no batcher thread
  o.coalesce_decrypts = false;
  o.binding.cluster_id = cluster_id;
  return o;
}

struct Side {
  Side(Clock& clock, const std::string& key, const std::string& tag, TransitKeyServiceOptions o)
      : transit(http, tokens, "transit", key), keys(transit, clock, std::move(o)) {
    http.key_tag = tag;
  }
  fakes::FakeTransitServer http;
  fakes::FakeTokenSource tokens;
  vault::TransitClient transit;
  TransitKeyService keys;
  size_t Decrypts() const {
    size_t n = 0;
    for (const auto& r : http.requests()) n += r.path.find("/decrypt/") != std::string::npos;
    return n;
  }
};

struct Fixture {
  explicit Fixture(SecondaryPolicy policy = SecondaryPolicy::kRequired, std::string cluster = "",
                   bool secondary_first = false)
      : p(clock, "kubernetes", "A", Opts(cluster)),
        s(clock, "kms2", "B", Opts(cluster)),
        r(p.keys, s.keys, clock, {policy, secondary_first, "https://vault-b.test:8200"}) {
    s.http.latest_version = 2;
    s.http.created[2] = "1700000100";
    p.keys.RefreshOnce();
    s.keys.RefreshOnce();
  }
  Deadline Soon() const { return clock.Now() + 3s; }
  fakes::FakeClock clock;
  Side p, s;
  RedundantKeyService r;
};

const std::string kWrappedKeyId = "transit/kubernetes:v1|transit/kms2:v2";

// ---- encrypt --------------------------------------------------------------------------------

TEST_CASE("Encrypt wraps the seed on both clusters; the secondary's copy is the annotation",
          "[secondary][encrypt]") {
  Fixture f;
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  CHECK(e->ciphertext == fakes::FakeTransitServer::Ct(1, "A" + kSeed));  // the primary's, as is
  CHECK(e->key_id == kWrappedKeyId);
  CHECK(f.r.Health().key_id == e->key_id);  // Status and Encrypt agree: the seed is adopted
  CHECK(f.r.Health().healthz == "ok");
  REQUIRE(e->annotations.count("secondary.trousseau.io") == 1);
  CHECK(e->annotations.at("secondary.trousseau.io") ==
        "1;transit/kms2:v2;" + fakes::FakeTransitServer::Ct(2, "B" + kSeed));
  CHECK(e->annotations.size() == 1);  // no binding configured: nothing else
  // Far below kube-apiserver's 32 KiB for all annotations; the KMS ciphertext stays <= 1 KiB.
  size_t total = 0;
  for (const auto& [k, v] : e->annotations) total += k.size() + v.size();
  CHECK(total < 300);
  CHECK(e->ciphertext.size() <= 1024);
  CHECK(CheckDecryptInput(e->ciphertext, e->key_id, e->annotations).ok());
  CHECK(f.r.State().unwrapped == 0);
}

TEST_CASE("key_id changes when either side rotates", "[secondary][key_id]") {
  Fixture f;
  const std::string before = f.r.Health().key_id;
  f.s.http.latest_version = 3;
  f.s.http.created[3] = "1700000200";
  f.s.keys.RefreshOnce();
  CHECK(f.r.Health().key_id == "transit/kubernetes:v1|transit/kms2:v3");
  f.p.http.latest_version = 4;
  f.p.http.created[4] = "1700000300";
  f.p.keys.RefreshOnce();
  CHECK(f.r.Health().key_id == "transit/kubernetes:v4|transit/kms2:v3");
  CHECK(f.r.Health().key_id != before);
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  CHECK(e->key_id == "transit/kubernetes:v4|transit/kms2:v3");
}

TEST_CASE("required: a secondary that is down refuses Encrypt and turns Status unhealthy",
          "[secondary][required]") {
  Fixture f(SecondaryPolicy::kRequired);
  f.s.http.SetDown(absl::UnavailableError("vault https://vault-b.test:8200: cannot connect"));
  f.s.keys.RefreshOnce();
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE_FALSE(e.ok());
  CHECK(e.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(e.status().message()), Contains("secondary Vault https://vault-b.test:8200"));
  CHECK_THAT(std::string(e.status().message()), Contains("policy is required"));
  const HealthSnapshot h = f.r.Health();
  CHECK_THAT(h.healthz, StartsWith("secondary Vault https://vault-b.test:8200"));
  CHECK_THAT(h.healthz, Contains("cannot connect"));
  CHECK(f.p.http.count() == 1);  // only the key read: the primary did not wrap a seed in vain
}

TEST_CASE("required: the secondary failing during Encrypt fails the call", "[secondary][required]") {
  Fixture f(SecondaryPolicy::kRequired);
  f.s.http.FailNext(1, absl::UnavailableError("vault https://vault-b.test:8200: timed out"), 0,
                    "/encrypt/");
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE_FALSE(e.ok());
  CHECK(e.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(e.status().message()), Contains("failed to wrap the seed"));
  CHECK_THAT(std::string(e.status().message()), Contains("timed out"));
  CHECK(f.r.State().secondary_encrypt_failures == 1);
}

TEST_CASE("best_effort: secondary down -> the primary alone wraps, marked and counted; heals",
          "[secondary][best_effort]") {
  Fixture f(SecondaryPolicy::kBestEffort);
  f.s.http.SetDown(absl::UnavailableError("vault https://vault-b.test:8200: cannot connect"));
  f.s.keys.RefreshOnce();
  HealthSnapshot h = f.r.Health();
  CHECK(h.healthz == "ok");  // kube-apiserver keeps writing
  CHECK(h.key_id == "transit/kubernetes:v1|unwrapped");
  CHECK_THAT(h.detail, Contains("wrapped by the primary only"));
  CHECK_THAT(h.detail, Contains("cannot connect"));
  CHECK_FALSE(f.r.State().secondary_up);

  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  CHECK(e->key_id == h.key_id);  // adopted
  CHECK(e->annotations.count("secondary.trousseau.io") == 0);
  CHECK(f.r.State().unwrapped == 1);
  // Still readable through the primary.
  auto d = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
  REQUIRE(d.ok());
  CHECK(d->plaintext.view() == kSeed);

  // The secondary is back: its next check succeeds, the key_id changes (kube-apiserver makes a
  // new seed), and the new seed is wrapped by both again.
  f.s.http.SetDown(absl::OkStatus());
  f.clock.Advance(10s);
  f.s.keys.RefreshOnce();
  h = f.r.Health();
  CHECK(h.key_id == kWrappedKeyId);
  CHECK(h.detail.empty());
  auto e2 = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e2.ok());
  CHECK(e2->key_id == kWrappedKeyId);
  CHECK(e2->annotations.count("secondary.trousseau.io") == 1);
  CHECK(f.r.State().unwrapped == 1);
}

TEST_CASE("best_effort: a failed secondary wrap marks it down until its next good check",
          "[secondary][best_effort]") {
  Fixture f(SecondaryPolicy::kBestEffort);
  f.s.http.FailNext(1, absl::DeadlineExceededError("vault https://vault-b.test:8200: timed out"),
                    0, "/encrypt/");
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  CHECK(e->key_id == "transit/kubernetes:v1|unwrapped");
  CHECK(e->annotations.count("secondary.trousseau.io") == 0);
  // Status now says so too (the secondary's own check has not run again yet).
  CHECK(f.r.Health().key_id == "transit/kubernetes:v1|unwrapped");
  CHECK_THAT(f.r.Health().detail, Contains("timed out"));
  // The next seed is not sent to the secondary while it is marked down.
  const size_t before = f.s.http.count();
  REQUIRE(f.r.Encrypt(kSeed, f.Soon()).ok());
  CHECK(f.s.http.count() == before);
  CHECK(f.r.State().unwrapped == 2);
  // A good check after the failure heals it.
  f.clock.Advance(1s);
  f.s.keys.RefreshOnce();
  CHECK(f.r.Health().key_id == kWrappedKeyId);
  auto e2 = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e2.ok());
  CHECK(e2->annotations.count("secondary.trousseau.io") == 1);
}

TEST_CASE("best_effort: a primary that fails the Encrypt itself (check still ok) -> secondary-only",
          "[secondary][best_effort]") {
  Fixture f(SecondaryPolicy::kBestEffort);
  f.p.http.FailNext(1, absl::UnavailableError("vault https://vault-a.test:8200: cannot connect"), 0,
                    "/encrypt/");
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  CHECK(e->key_id == "unwrapped|transit/kms2:v2");
  CHECK(e->annotations.at("secondary.trousseau.io") == "1;transit/kms2:v2;" + e->ciphertext);
  SECTION("but not when the primary answers otherwise (403): its error") {
    f.p.http.FailNext(2, absl::OkStatus(), 403, "/encrypt/", false, R"({"errors":["permission denied"]})");
    auto e2 = f.r.Encrypt(kSeed, f.Soon());
    REQUIRE_FALSE(e2.ok());
    CHECK(e2.status().code() == absl::StatusCode::kPermissionDenied);
  }
}

TEST_CASE("required: without the primary there is no Encrypt", "[secondary][encrypt]") {
  Fixture f(SecondaryPolicy::kRequired);
  f.p.http.SetDown(absl::UnavailableError("vault https://vault-a.test:8200: cannot connect"));
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE_FALSE(e.ok());
  CHECK(e.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(e.status().message()), Contains("vault-a"));
}

TEST_CASE("best_effort: the primary gone -> a secondary-only record that reads back",
          "[secondary][best_effort]") {
  Fixture f(SecondaryPolicy::kBestEffort);
  f.p.http.SetDown(absl::UnavailableError("vault https://vault-a.test:8200: cannot connect"));
  f.p.keys.RefreshOnce();
  const HealthSnapshot h = f.r.Health();
  CHECK(h.healthz == "ok");
  CHECK(h.key_id == "unwrapped|transit/kms2:v2");
  CHECK_THAT(h.detail, Contains("wrapped by the secondary only"));
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  CHECK(e->key_id == h.key_id);
  CHECK(e->ciphertext == fakes::FakeTransitServer::Ct(2, "B" + kSeed));  // the secondary's
  CHECK(e->annotations.at("secondary.trousseau.io") == "1;transit/kms2:v2;" + e->ciphertext);
  CHECK(f.r.State().unwrapped == 1);
  CHECK(f.p.http.requests().back().path.find("/encrypt/") == std::string::npos);  // not asked
  // Read back by the secondary alone, also once the primary is back (it never wrapped it).
  f.p.http.SetDown(absl::OkStatus());
  const size_t primary_before = f.p.Decrypts();
  auto d = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
  REQUIRE(d.ok());
  CHECK(d->plaintext.view() == kSeed);
  CHECK(f.p.Decrypts() == primary_before);
  // The primary's next good check heals the key_id (a new seed, wrapped by both).
  f.clock.Advance(1s);
  f.p.keys.RefreshOnce();
  CHECK(f.r.Health().key_id == kWrappedKeyId);
  // A copy that differs from the KMS ciphertext is an ordinary copy: the primary first.
  auto e2 = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e2.ok());
  auto ann = e2->annotations;
  REQUIRE(f.r.Decrypt(e2->ciphertext, e2->key_id, ann, f.Soon()).ok());
  CHECK(f.p.Decrypts() == primary_before + 1);
}

// ---- decrypt --------------------------------------------------------------------------------

TEST_CASE("Decrypt asks the primary only while it answers", "[secondary][decrypt]") {
  Fixture f;
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  auto d = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
  REQUIRE(d.ok());
  CHECK(d->plaintext.view() == kSeed);
  CHECK(f.s.Decrypts() == 0);
  CHECK(f.p.Decrypts() == 1);
  CHECK(f.r.State().fallbacks == 0);
}

TEST_CASE("Decrypt falls back to the secondary's copy when the primary is unavailable or lost",
          "[secondary][decrypt][fallback]") {
  struct Case {
    const char* name;
    absl::Status transport;  // whole-call transport error, or
    long http;               // an HTTP answer
    const char* body;
  };
  const Case cases[] = {
      {"connection refused", absl::UnavailableError("vault https://vault-a.test:8200: cannot connect"), 0, ""},
      {"timeout", absl::DeadlineExceededError("vault https://vault-a.test:8200: timed out"), 0, ""},
      {"sealed", absl::OkStatus(), 503, R"({"errors":["Vault is sealed"]})"},
      {"fresh primary, no key", absl::OkStatus(), 400, R"({"errors":["encryption key not found"]})"},
      {"fresh primary, no mount", absl::OkStatus(), 404, R"({"errors":["no handler for route"]})"},
  };
  for (const Case& c : cases) {
    SECTION(c.name) {
      Fixture f;
      auto e = f.r.Encrypt(kSeed, f.Soon());
      REQUIRE(e.ok());
      f.p.http.FailNext(1, c.transport, c.http, "/decrypt/", false, c.body);
      auto d = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
      REQUIRE(d.ok());
      CHECK(d->plaintext.view() == kSeed);
      CHECK(f.s.Decrypts() == 1);
      CHECK(f.r.State().fallbacks == 1);
      // The primary had half the caller's time; the secondary the rest.
      const auto reqs = f.p.http.requests();
      CHECK(reqs.back().deadline <= f.clock.Now() + 1500ms);
    }
  }
}

TEST_CASE("Decrypt never falls back when the primary answers that the ciphertext is bad",
          "[secondary][decrypt][no-fallback]") {
  Fixture f;
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  SECTION("message authentication failed (a ciphertext the primary's key did not write)") {
    const std::string forged = fakes::FakeTransitServer::Ct(1, "X" + kSeed);
    auto d = f.r.Decrypt(forged, e->key_id, e->annotations, f.Soon());
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(d.status().message()), Contains("rejected the ciphertext"));
  }
  SECTION("permission denied (token or policy)") {
    f.p.http.FailNext(2, absl::OkStatus(), 403, "/decrypt/", false,
                      R"({"errors":["permission denied"]})");
    auto d = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == absl::StatusCode::kPermissionDenied);
  }
  SECTION("below min_decryption_version") {
    f.p.http.min_decryption_version = 2;
    auto d = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == absl::StatusCode::kFailedPrecondition);
  }
  CHECK(f.s.Decrypts() == 0);
  CHECK(f.r.State().fallbacks == 0);
}

TEST_CASE("a bad secondary copy is reported, not papered over", "[secondary][decrypt]") {
  Fixture f;
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  f.p.http.SetDown(absl::UnavailableError("vault https://vault-a.test:8200: cannot connect"));
  auto ann = e->annotations;
  ann["secondary.trousseau.io"] = "1;transit/kms2:v2;" + fakes::FakeTransitServer::Ct(2, "A" + kSeed);
  auto d = f.r.Decrypt(e->ciphertext, e->key_id, ann, f.Soon());
  REQUIRE_FALSE(d.ok());
  CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(d.status().message()), StartsWith("primary: vault https://vault-a.test:8200"));
  CHECK_THAT(std::string(d.status().message()), Contains("fallback to the secondary copy failed"));
  SECTION("and a secondary that is down too: UNAVAILABLE naming both") {
    f.s.http.SetDown(absl::UnavailableError("vault https://vault-b.test:8200: cannot connect"));
    auto d2 = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
    REQUIRE_FALSE(d2.ok());
    CHECK(d2.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(d2.status().message()), Contains("vault-a"));
    CHECK_THAT(std::string(d2.status().message()), Contains("vault-b"));
  }
  CHECK(f.r.State().fallbacks == 0);
}

TEST_CASE("seeds without the annotation (older, or unwrapped) read from the primary as before",
          "[secondary][decrypt][compat]") {
  Fixture f;
  const std::string old_ct = fakes::FakeTransitServer::Ct(1, "A" + kSeed);
  auto d = f.r.Decrypt(old_ct, "transit/kubernetes:v1", {}, f.Soon());
  REQUIRE(d.ok());
  CHECK(d->plaintext.view() == kSeed);
  f.p.http.SetDown(absl::UnavailableError("vault https://vault-a.test:8200: cannot connect"));
  auto d2 = f.r.Decrypt(old_ct, "transit/kubernetes:v1", {}, f.Soon());
  REQUIRE_FALSE(d2.ok());
  CHECK(d2.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(d2.status().message()), Contains("no secondary.trousseau.io copy"));
  CHECK(f.s.Decrypts() == 0);
}

TEST_CASE("a primary whose key was replaced (rollback guard) falls back on its 400",
          "[secondary][decrypt][rollback]") {
  Fixture f;
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  // The key is deleted and recreated: another creation time, and a key that cannot open the
  // old seeds.
  f.p.http.created[1] = "1800000000";
  f.p.http.key_tag = "A2";
  f.p.keys.RefreshOnce();
  REQUIRE(f.p.keys.State().rollback_active);
  auto d = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
  REQUIRE(d.ok());
  CHECK(d->plaintext.view() == kSeed);
  CHECK(f.r.State().fallbacks == 1);
  CHECK_THAT(f.r.Health().healthz, Contains("primary Vault: "));  // still unhealthy: act on it
}

TEST_CASE("decrypt_order secondary_first reads the secondary's copy first", "[secondary][decrypt]") {
  Fixture f(SecondaryPolicy::kRequired, "", /*secondary_first=*/true);
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  f.p.http.key_tag = "A2";  // a recreated primary key: it cannot open the old seed
  auto d = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
  REQUIRE(d.ok());
  CHECK(d->plaintext.view() == kSeed);
  CHECK(f.p.Decrypts() == 0);
  // No copy: the primary, as always.
  auto d2 = f.r.Decrypt(fakes::FakeTransitServer::Ct(1, "A2" + kSeed), "transit/kubernetes:v1", {},
                        f.Soon());
  REQUIRE(d2.ok());
  CHECK(f.p.Decrypts() == 1);
}

TEST_CASE("binding applies on the secondary with its own key identity", "[secondary][binding]") {
  Fixture f(SecondaryPolicy::kRequired, "prod-eu-1");
  auto e = f.r.Encrypt(kSeed, f.Soon());
  REQUIRE(e.ok());
  CHECK(e->key_id == "transit/kubernetes:v1+aad1|transit/kms2:v2+aad1");
  CHECK(e->annotations.at("aad.trousseau.io") == "1;cluster=prod-eu-1");
  CHECK_THAT(e->annotations.at("secondary.trousseau.io"), StartsWith("1;transit/kms2:v2+aad1;vault:v2:"));
  const std::string aad_s = base64::Encode(BindingAadV1("prod-eu-1", "transit/kms2"));
  CHECK(f.s.http.requests().back().associated.at(0) == aad_s);
  f.p.http.SetDown(absl::UnavailableError("vault https://vault-a.test:8200: cannot connect"));
  auto d = f.r.Decrypt(e->ciphertext, e->key_id, e->annotations, f.Soon());
  REQUIRE(d.ok());
  CHECK(f.s.http.requests().back().associated.at(0) == aad_s);
}

// ---- health ---------------------------------------------------------------------------------

TEST_CASE("the primary down and the secondary up: Status stays ok, with the detail",
          "[secondary][health]") {
  Fixture f;
  f.p.http.SetDown(absl::UnavailableError("vault https://vault-a.test:8200: cannot connect"));
  f.p.keys.RefreshOnce();
  const HealthSnapshot h = f.r.Health();
  CHECK(h.healthz == "ok");
  CHECK(h.key_id == kWrappedKeyId);  // required: unchanged, kube-apiserver keeps its seed
  CHECK_THAT(h.detail, Contains("primary Vault unavailable"));
  CHECK_FALSE(f.r.State().primary_up);
  SECTION("both down: unhealthy") {
    f.s.http.SetDown(absl::UnavailableError("vault https://vault-b.test:8200: cannot connect"));
    f.s.keys.RefreshOnce();
    CHECK_THAT(f.r.Health().healthz, StartsWith("secondary Vault"));
  }
}

TEST_CASE("no primary key known yet: no key_id", "[secondary][health]") {
  fakes::FakeClock clock;
  Side p(clock, "kubernetes", "A", Opts());
  Side s(clock, "kms2", "B", Opts());
  RedundantKeyService r(p.keys, s.keys, clock, {});
  CHECK(r.Health().key_id.empty());
  CHECK(r.Health().healthz != "ok");
}

// ---- the annotation format ------------------------------------------------------------------

TEST_CASE("the secondary annotation parses v1 and refuses anything else by name",
          "[secondary][format]") {
  const std::string ct = fakes::FakeTransitServer::Ct(2, kSeed);
  auto ok = ParseSecondaryAnnotation(SecondaryAnnotationV1("transit/k:v2", ct));
  REQUIRE(ok.ok());
  CHECK(ok->key_id == "transit/k:v2");
  CHECK(ok->ciphertext == ct);
  for (const std::string& bad : {std::string(""), std::string("1"), std::string("1;transit/k:v2"),
                                "2;transit/k:v2;" + ct, ";transit/k:v2;" + ct,
                                "1;;" + ct, std::string("1;transit/k:v2;not-a-ciphertext"),
                                "1;" + std::string(1025, 'k') + ";" + ct,
                                std::string("\x1b[31m;x;y")}) {
    auto p = ParseSecondaryAnnotation(bad);
    CHECK_FALSE(p.ok());
    CHECK(p.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(p.status().message()), Contains("secondary.trousseau.io"));
    CHECK(std::string(p.status().message()).find('\x1b') == std::string::npos);
  }
  CHECK_THAT(std::string(ParseSecondaryAnnotation("2;k;" + ct).status().message()),
             Contains("format version \"2\""));
}

TEST_CASE("PrimaryLost classifies the primary's answers", "[secondary][classify]") {
  CHECK(PrimaryLost(absl::UnavailableError("x")));
  CHECK(PrimaryLost(absl::DeadlineExceededError("x")));
  CHECK(PrimaryLost(absl::InvalidArgumentError("... (vault said: encryption key not found)")));
  CHECK(PrimaryLost(absl::InternalError("vault a: transit decrypt on t/k: not found: check vault.transit.mount and")));
  CHECK_FALSE(PrimaryLost(absl::InvalidArgumentError("Vault rejected the ciphertext (vault said: cipher: message authentication failed)")));
  CHECK_FALSE(PrimaryLost(absl::PermissionDeniedError("permission denied")));
  CHECK_FALSE(PrimaryLost(absl::FailedPreconditionError("min_decryption_version")));
  CHECK_FALSE(PrimaryLost(absl::InternalError("malformed response")));
  CHECK_FALSE(PrimaryLost(absl::ResourceExhaustedError("x")));
}

}  // namespace
}  // namespace trousseau::envelope
