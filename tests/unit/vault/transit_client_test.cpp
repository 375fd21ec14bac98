// TransitClient against a FakeHttpTransport: the requests it builds, how it reads Vault's
// answers, how each HTTP status maps to a code, the 403 retry, and that no error message ever
// carries the plaintext or the token.
#include "vault/transit_client.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/base64.h"
#include "fakes/fake_http_transport.h"
#include "fakes/fake_token_source.h"

namespace trousseau::vault {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using fakes::FakeHttpTransport;
using fakes::FakeTokenSource;
using fakes::Method;
using nlohmann::json;

constexpr const char* kToken = "s.TOKEN-MARKER-91bc";
constexpr const char* kPlain = "PLAINTEXT-MARKER-7f3a-seed-of-32b";
const std::string kEncrypt = "/v1/transit/encrypt/kubernetes";
const std::string kDecrypt = "/v1/transit/decrypt/kubernetes";
const std::string kKeys = "/v1/transit/keys/kubernetes";

std::string Ct(int version) {
  return "vault:v" + std::to_string(version) + ":" + base64::Encode(std::string(60, '\x11'));
}

struct Fixture {
  FakeHttpTransport http;
  FakeTokenSource tokens{kToken};
  TransitClient client{http, tokens, "transit", "kubernetes"};
  Deadline deadline = std::chrono::steady_clock::now() + 5s;
};

std::string EncryptOk(int version) {
  return json{{"data", {{"ciphertext", Ct(version)}, {"key_version", version}}}}.dump();
}

std::string Msg(const absl::Status& st) { return std::string(st.message()); }

// The message must not carry the plaintext, its base64, or the token.
void ExpectNoSecrets(const absl::Status& st) {
  const std::string m = Msg(st);
  INFO(m);
  CHECK(m.find(kPlain) == std::string::npos);
  CHECK(m.find(base64::Encode(kPlain)) == std::string::npos);
  CHECK(m.find("TOKEN-MARKER") == std::string::npos);
}

// ---- Encrypt --------------------------------------------------------------------------------

TEST_CASE("Encrypt posts base64 plaintext and key_version with the token", "[transit]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptOk(2), "https://vault-b.test:8200");
  auto w = f.client.Encrypt(kPlain, 2, f.deadline);
  REQUIRE(w.ok());
  CHECK(w->ciphertext == Ct(2));
  CHECK(w->version == 2);
  CHECK(w->node == "https://vault-b.test:8200");

  REQUIRE(f.http.count() == 1);
  const auto req = f.http.last();
  CHECK(req.method == Method::kPost);
  CHECK(req.path == kEncrypt);
  CHECK(req.had_token);
  CHECK(req.token == kToken);
  CHECK(req.deadline == f.deadline);
  REQUIRE(req.had_body);
  json body = json::parse(req.body);
  CHECK(body["plaintext"] == base64::Encode(kPlain));
  CHECK(body["key_version"] == 2);
  CHECK(body.size() == 2);
}

TEST_CASE("Encrypt with key_version 0 lets Vault pick the latest", "[transit]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 200, EncryptOk(5));
  auto w = f.client.Encrypt(std::string("\0\x01\xff", 3), 0, f.deadline);
  REQUIRE(w.ok());
  json body = json::parse(f.http.last().body);
  CHECK_FALSE(body.contains("key_version"));
  CHECK(body["plaintext"] == base64::Encode(std::string("\0\x01\xff", 3)));
}

TEST_CASE("Encrypt takes the version from the ciphertext, not from data.key_version",
          "[transit]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 200,
                 json{{"data", {{"ciphertext", Ct(7)}, {"key_version", 9}}}}.dump());
  auto w = f.client.Encrypt(kPlain, 0, f.deadline);
  REQUIRE(w.ok());
  CHECK(w->version == 7);
}

TEST_CASE("Encrypt: malformed answers from Vault are INTERNAL", "[transit][negative]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json at all", "malformed response"},
      {"", "malformed response"},
      {R"([1,2,3])", "no data object"},
      {R"({"errors":[]})", "no data object"},
      {R"({"data":"vault:v1:abc"})", "no data object"},
      {R"({"data":{}})", "no data.ciphertext string"},
      {R"({"data":{"ciphertext":5}})", "no data.ciphertext string"},
      {R"({"data":{"ciphertext":null}})", "no data.ciphertext string"},
      {R"({"data":{"ciphertext":["vault:v1:x"]}})", "no data.ciphertext string"},
      {R"({"data":{"ciphertext":"vault:v0:AAAA"}})", "unusable ciphertext"},
      {R"({"data":{"ciphertext":"garbage"}})", "unusable ciphertext"},
      {R"({"data":{"ciphertext":"vault:v1:AAAA"}})", "unusable ciphertext"},
      {json{{"data", {{"ciphertext", "vault:v1:" + base64::Encode(std::string(100 * 1024, 'x'))}}}}
           .dump(),
       "unusable ciphertext"},
  };
  for (const auto& [body, fragment] : cases) {
    INFO("body: " << body.substr(0, 80));
    Fixture f;
    f.http.Respond(Method::kPost, kEncrypt, 200, body);
    auto w = f.client.Encrypt(kPlain, 0, f.deadline);
    REQUIRE_FALSE(w.ok());
    CHECK(w.status().code() == absl::StatusCode::kInternal);
    CHECK_THAT(Msg(w.status()), Contains(fragment));
    CHECK_THAT(Msg(w.status()), Contains("transit encrypt"));
    ExpectNoSecrets(w.status());
  }
}

TEST_CASE("An error text that echoes the token never reaches the message (found by fuzzing)",
          "[transit][negative]") {
  // A proxy or a misbehaving server may quote the request's X-Vault-Token in its error text; the
  // messages quote that text, so the token is overwritten in the answer before they are built.
  for (long status : {400L, 403L, 404L, 429L, 500L, 502L, 503L}) {
    INFO("HTTP " << status);
    Fixture f;
    const std::string body = json{{"errors", {std::string("bad token ") + kToken + " here",
                                              std::string("again:") + kToken}}}.dump();
    f.http.Respond(Method::kPost, kEncrypt, status, body);
    f.http.Respond(Method::kPost, kDecrypt, status, body);
    auto w = f.client.Encrypt(kPlain, 0, f.deadline);
    REQUIRE_FALSE(w.ok());
    CHECK_THAT(Msg(w.status()), Contains("bad token"));
    ExpectNoSecrets(w.status());
    auto u = f.client.Decrypt(Ct(1), f.deadline);
    REQUIRE_FALSE(u.ok());
    ExpectNoSecrets(u.status());
  }
}

TEST_CASE("Encrypt accepts a ciphertext over 1024 bytes (v1beta1 plaintexts are larger)",
          "[transit]") {
  // The KMS v2 1024-byte cap is the v2 adapter's to enforce; the client allows v1beta1 sizes.
  Fixture f;
  const std::string ct = "vault:v1:" + base64::Encode(std::string(4096 + 28, 'x'));
  f.http.Respond(Method::kPost, kEncrypt, 200, json{{"data", {{"ciphertext", ct}}}}.dump());
  auto w = f.client.Encrypt(std::string(4096, 'p'), 0, f.deadline);
  REQUIRE(w.ok());
  CHECK(w->ciphertext == ct);
}

// ---- Decrypt --------------------------------------------------------------------------------

TEST_CASE("Decrypt posts the ciphertext and decodes the plaintext", "[transit]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 200,
                 json{{"data", {{"plaintext", base64::Encode(kPlain)}}}}.dump());
  auto u = f.client.Decrypt(Ct(3), f.deadline);
  REQUIRE(u.ok());
  CHECK(u->plaintext.view() == kPlain);
  CHECK(u->node == "https://vault-a.test:8200");
  const auto req = f.http.last();
  CHECK(req.method == Method::kPost);
  CHECK(req.path == kDecrypt);
  CHECK(req.token == kToken);
  CHECK(json::parse(req.body) == json{{"ciphertext", Ct(3)}});
}

TEST_CASE("Vault's request_id is kept for the audit record; odd ones are dropped", "[transit]") {
  Fixture f;
  const std::string id = "2e4c7a1b-5d3f-4c2a-9b8e-0f1a2b3c4d5e";
  f.http.Respond(Method::kPost, kEncrypt, 200,
                 json{{"request_id", id}, {"data", {{"ciphertext", Ct(2)}}}}.dump());
  auto w = f.client.Encrypt(kPlain, 0, f.deadline);
  REQUIRE(w.ok());
  CHECK(w->request_id == id);
  f.http.Respond(Method::kPost, kDecrypt, 200,
                 json{{"request_id", id}, {"data", {{"plaintext", base64::Encode(kPlain)}}}}.dump());
  auto u = f.client.Decrypt(Ct(2), f.deadline);
  REQUIRE(u.ok());
  CHECK(u->request_id == id);
  for (const json& odd : {json(nullptr), json(42), json(""), json(std::string(65, 'a')),
                          json("id with spaces"), json("id\"quote"), json("id\nnewline")}) {
    INFO(odd.dump());
    f.http.Respond(Method::kPost, kDecrypt, 200,
                   json{{"request_id", odd}, {"data", {{"plaintext", base64::Encode(kPlain)}}}}.dump());
    auto o = f.client.Decrypt(Ct(2), f.deadline);
    REQUIRE(o.ok());  // an odd request_id never fails the call
    CHECK(o->request_id.empty());
  }
  f.http.Respond(Method::kPost, kDecrypt, 200,
                 json{{"data", {{"plaintext", base64::Encode(kPlain)}}}}.dump());
  auto none = f.client.Decrypt(Ct(2), f.deadline);
  REQUIRE(none.ok());
  CHECK(none->request_id.empty());
}

TEST_CASE("Decrypt of an empty plaintext gives an empty buffer", "[transit]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 200, R"({"data":{"plaintext":""}})");
  auto u = f.client.Decrypt(Ct(1), f.deadline);
  REQUIRE(u.ok());
  CHECK(u->plaintext.empty());
}

TEST_CASE("Decrypt refuses a malformed ciphertext before any request", "[transit][negative]") {
  Fixture f;
  for (const std::string& bad : {std::string(""), std::string("vault:v0:AAAA"),
                                 std::string("k8s:enc:xyz"), Ct(1) + "!"}) {
    auto u = f.client.Decrypt(bad, f.deadline);
    REQUIRE_FALSE(u.ok());
    CHECK(u.status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(f.http.count() == 0);
  CHECK(f.tokens.token_calls() == 0);
}

TEST_CASE("Decrypt: malformed answers from Vault are INTERNAL", "[transit][negative]") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{", "malformed response"},
      {R"({"data":null})", "no data object"},
      {R"({"data":{"plaintext":12}})", "no data.plaintext string"},
      {R"({"data":{}})", "no data.plaintext string"},
      {R"({"data":{"plaintext":"not base64!"}})", "data.plaintext is not base64"},
      {R"({"data":{"plaintext":"QUJD\nRA=="}})", "data.plaintext is not base64"},
      {R"({"data":{"plaintext":"QUJ"}})", "data.plaintext is not base64"},
  };
  for (const auto& [body, fragment] : cases) {
    INFO("body: " << body);
    Fixture f;
    f.http.Respond(Method::kPost, kDecrypt, 200, body);
    auto u = f.client.Decrypt(Ct(1), f.deadline);
    REQUIRE_FALSE(u.ok());
    CHECK(u.status().code() == absl::StatusCode::kInternal);
    CHECK_THAT(Msg(u.status()), Contains(fragment));
    CHECK_THAT(Msg(u.status()), Contains("transit decrypt"));
  }
}

TEST_CASE("Decrypt: the bad-plaintext message does not echo what Vault sent",
          "[transit][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 200,
                 json{{"data", {{"plaintext", std::string(kPlain) + "!"}}}}.dump());
  auto u = f.client.Decrypt(Ct(1), f.deadline);
  REQUIRE_FALSE(u.ok());
  ExpectNoSecrets(u.status());
}

// ---- HTTP status mapping ---------------------------------------------------------------------

TEST_CASE("HTTP 400 on decrypt is INVALID_ARGUMENT with Vault's reason", "[transit][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 400,
                 R"({"errors":["invalid ciphertext: unable to decrypt"]})");
  auto u = f.client.Decrypt(Ct(1), f.deadline);
  REQUIRE_FALSE(u.ok());
  CHECK(u.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Msg(u.status()), Contains("rejected the ciphertext"));
  CHECK_THAT(Msg(u.status()), Contains("vault said: invalid ciphertext: unable to decrypt"));
  CHECK_THAT(Msg(u.status()), Contains("transit/kubernetes"));
  CHECK_THAT(Msg(u.status()), Contains("https://vault-a.test:8200"));
}

TEST_CASE("HTTP 400 with OpenBao's too-old message is FAILED_PRECONDITION", "[transit][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 400,
                 R"j({"errors":["ciphertext or signature version is disallowed by policy (too old)"]})j");
  auto u = f.client.Decrypt(Ct(1), f.deadline);
  REQUIRE_FALSE(u.ok());
  CHECK(u.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(Msg(u.status()), Contains("min_decryption_version"));
  CHECK_THAT(Msg(u.status()), Contains("too old"));
}

TEST_CASE("HTTP 400 on encrypt is INVALID_ARGUMENT", "[transit][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 400, R"({"errors":["requested version 9 is newer"]})");
  auto w = f.client.Encrypt(kPlain, 9, f.deadline);
  REQUIRE_FALSE(w.ok());
  CHECK(w.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Msg(w.status()), Contains("rejected the request"));
  ExpectNoSecrets(w.status());
}

TEST_CASE("HTTP 403 invalidates the token once, retries once, then PERMISSION_DENIED",
          "[transit][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 403, R"({"errors":["permission denied"]})");
  auto w = f.client.Encrypt(kPlain, 0, f.deadline);
  REQUIRE_FALSE(w.ok());
  CHECK(w.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK_THAT(Msg(w.status()), Contains("permission denied"));
  CHECK(f.tokens.invalidations() == 1);
  CHECK(f.http.count(Method::kPost, kEncrypt) == 2);
  ExpectNoSecrets(w.status());
}

TEST_CASE("HTTP 403 then success with a fresh token", "[transit]") {
  Fixture f;
  f.tokens.QueueNext("s.second-token");
  f.http.Respond(Method::kPost, kDecrypt, 403, R"({"errors":["permission denied"]})");
  f.http.Then(Method::kPost, kDecrypt, 200,
              json{{"data", {{"plaintext", base64::Encode("ok")}}}}.dump());
  auto u = f.client.Decrypt(Ct(1), f.deadline);
  REQUIRE(u.ok());
  CHECK(u->plaintext.view() == "ok");
  CHECK(f.tokens.invalidations() == 1);
  const auto reqs = f.http.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[0].token == kToken);
  CHECK(reqs[1].token == "s.second-token");
}

TEST_CASE("HTTP 404 is INTERNAL and names mount and key", "[transit][negative]") {
  Fixture f;
  f.http.Respond(Method::kGet, kKeys, 404, R"({"errors":[]})");
  auto k = f.client.ReadKey(f.deadline);
  REQUIRE_FALSE(k.ok());
  CHECK(k.status().code() == absl::StatusCode::kInternal);
  CHECK_THAT(Msg(k.status()), Contains("transit/kubernetes"));
  CHECK_THAT(Msg(k.status()), Contains("not found"));
  CHECK_THAT(Msg(k.status()), Contains("vault.transit.key"));
  CHECK(f.tokens.invalidations() == 0);
}

TEST_CASE("HTTP 429, 500, 503, 502, 504, 412 and 307 are UNAVAILABLE", "[transit][negative]") {
  for (long status : {429L, 500L, 503L, 502L, 504L, 412L, 307L}) {
    INFO("HTTP " << status);
    Fixture f;
    f.http.Respond(Method::kPost, kEncrypt, status, R"({"errors":["Vault is sealed"]})");
    auto w = f.client.Encrypt(kPlain, 0, f.deadline);
    REQUIRE_FALSE(w.ok());
    CHECK(w.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(Msg(w.status()), Contains("vault said: Vault is sealed"));
    CHECK(f.http.count() == 1);  // no retry in the client: the transport fails over
    ExpectNoSecrets(w.status());
  }
}

TEST_CASE("a Vault 500 names Vault's failure, not the plugin's", "[transit][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 500, R"({"errors":["1 error occurred:\n\t* storage"]})");
  auto u = f.client.Decrypt(Ct(1), f.deadline);
  REQUIRE_FALSE(u.ok());
  CHECK(u.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(Msg(u.status()), Contains("Vault internal error (500)"));
  CHECK_THAT(Msg(u.status()), Contains("vault said: 1 error occurred"));
}

TEST_CASE("other unexpected statuses are INTERNAL", "[transit][negative]") {
  for (long status : {501L, 418L, 201L}) {
    INFO("HTTP " << status);
    Fixture f;
    f.http.Respond(Method::kPost, kDecrypt, status, "<html>oops</html>");
    auto u = f.client.Decrypt(Ct(1), f.deadline);
    REQUIRE_FALSE(u.ok());
    CHECK(u.status().code() == absl::StatusCode::kInternal);
    CHECK_THAT(Msg(u.status()), Contains("unexpected HTTP " + std::to_string(status)));
    CHECK(Msg(u.status()).find("vault said") == std::string::npos);
  }
}

TEST_CASE("transport errors pass through unchanged", "[transit][negative]") {
  for (const absl::Status& err :
       {absl::DeadlineExceededError("vault https://a: timed out after 5000 ms"),
        absl::UnavailableError("vault https://a: cannot connect (refused)")}) {
    Fixture f;
    f.http.Fail(Method::kPost, kEncrypt, err);
    auto w = f.client.Encrypt(kPlain, 0, f.deadline);
    REQUIRE_FALSE(w.ok());
    CHECK(w.status() == err);
    CHECK(f.tokens.invalidations() == 0);
  }
  Fixture f;
  f.http.Fail(Method::kGet, kKeys, absl::DeadlineExceededError("slow"));
  auto k = f.client.ReadKey(f.deadline);
  REQUIRE_FALSE(k.ok());
  CHECK(k.status().code() == absl::StatusCode::kDeadlineExceeded);
}

TEST_CASE("a token source failure stops the call before any request", "[transit][negative]") {
  Fixture f;
  f.tokens.FailWith(absl::UnavailableError("vault token: cannot read"));
  auto w = f.client.Encrypt(kPlain, 0, f.deadline);
  REQUIRE_FALSE(w.ok());
  CHECK(w.status().code() == absl::StatusCode::kUnavailable);
  CHECK(f.http.count() == 0);
}

TEST_CASE("Vault's error text is sanitised before it reaches a message", "[transit][negative]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 400,
                 "{\"errors\":[\"bad\\u0000input\\r\\nX-Injected: 1\\u001b[2J\"]}");
  auto u = f.client.Decrypt(Ct(1), f.deadline);
  REQUIRE_FALSE(u.ok());
  const std::string m = Msg(u.status());
  CHECK_THAT(m, Contains("bad?input??X-Injected: 1?[2J"));
  for (char c : m) {
    INFO(static_cast<int>(static_cast<unsigned char>(c)));
    CHECK((c >= 0x20 && c < 0x7f));
  }
}

TEST_CASE("no error message carries the plaintext or the token", "[transit][negative]") {
  for (long status : {400L, 403L, 404L, 412L, 429L, 500L, 502L, 503L}) {
    INFO("HTTP " << status);
    Fixture f;
    f.http.Respond(Method::kPost, kEncrypt, status, R"({"errors":["something went wrong"]})");
    auto w = f.client.Encrypt(kPlain, 1, f.deadline);
    REQUIRE_FALSE(w.ok());
    ExpectNoSecrets(w.status());
    f.http.Respond(Method::kPost, kDecrypt, status, R"({"errors":["something went wrong"]})");
    auto u = f.client.Decrypt(Ct(1), f.deadline);
    REQUIRE_FALSE(u.ok());
    ExpectNoSecrets(u.status());
  }
}

// ---- ReadKey --------------------------------------------------------------------------------

TEST_CASE("ReadKey reads the key's versions and type", "[transit]") {
  Fixture f;
  f.http.Respond(Method::kGet, kKeys, 200,
                 R"({"data":{"latest_version":4,"min_decryption_version":2,
                    "min_encryption_version":3,"type":"aes256-gcm96","keys":{"1":1,"2":2}}})");
  auto k = f.client.ReadKey(f.deadline);
  REQUIRE(k.ok());
  CHECK(k->latest_version == 4);
  CHECK(k->min_decryption_version == 2);
  CHECK(k->min_encryption_version == 3);
  CHECK(k->type == "aes256-gcm96");
  const auto req = f.http.last();
  CHECK(req.method == Method::kGet);
  CHECK(req.path == kKeys);
  CHECK(req.had_token);
  CHECK_FALSE(req.had_body);
}

TEST_CASE("ReadKey tolerates missing optional fields and caps the type", "[transit]") {
  Fixture f;
  f.http.Respond(Method::kGet, kKeys, 200,
                 json{{"data", {{"latest_version", 1}, {"type", std::string(200, 't')}}}}.dump());
  auto k = f.client.ReadKey(f.deadline);
  REQUIRE(k.ok());
  CHECK(k->latest_version == 1);
  CHECK(k->min_decryption_version == 0);
  CHECK(k->type.size() == 67);  // 64 characters and "..."
}

TEST_CASE("ReadKey: a negative or out-of-range min version is ignored, not copied", "[transit][negative]") {
  // Found by tests/fuzz (vault_response): -1 used to reach KeyInfo.
  Fixture f;
  f.http.Respond(Method::kGet, kKeys, 200,
                 R"({"data":{"latest_version":2,"min_decryption_version":-1,
                    "min_encryption_version":18446744073709551615}})");
  auto k = f.client.ReadKey(f.deadline);
  REQUIRE(k.ok());
  CHECK(k->latest_version == 2);
  CHECK(k->min_decryption_version == 0);
  CHECK(k->min_encryption_version == 0);
}

TEST_CASE("ReadKey: missing or invalid latest_version is INTERNAL", "[transit][negative]") {
  for (const char* body :
       {R"({"data":{}})", R"({"data":{"latest_version":0}})", R"({"data":{"latest_version":-3}})",
        R"({"data":{"latest_version":1.5}})", R"({"data":{"latest_version":null}})",
        R"({"data":{"latest_version":true}})", R"({"data":{"latest_version":18446744073709551615}})",
        R"({"data":[]})", R"({})", "nope"}) {
    INFO(body);
    Fixture f;
    f.http.Respond(Method::kGet, kKeys, 200, body);
    auto k = f.client.ReadKey(f.deadline);
    REQUIRE_FALSE(k.ok());
    CHECK(k.status().code() == absl::StatusCode::kInternal);
    CHECK_THAT(Msg(k.status()), Contains("transit read key transit/kubernetes"));
  }
}

TEST_CASE("ReadKey maps HTTP errors like the other calls", "[transit][negative]") {
  Fixture f;
  f.http.Respond(Method::kGet, kKeys, 403, R"({"errors":["permission denied"]})");
  auto k = f.client.ReadKey(f.deadline);
  REQUIRE_FALSE(k.ok());
  CHECK(k.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(f.tokens.invalidations() == 1);
  CHECK(f.http.count() == 2);
  f.http.Respond(Method::kGet, kKeys, 503, "{}");
  auto k2 = f.client.ReadKey(f.deadline);
  CHECK(k2.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(Msg(k2.status()), Contains("read key"));
}

TEST_CASE("mount and key are used as given in paths", "[transit]") {
  FakeHttpTransport http;
  FakeTokenSource tokens;
  TransitClient client(http, tokens, "kms/transit", "k8s-prod");
  CHECK(client.mount() == "kms/transit");
  CHECK(client.key() == "k8s-prod");
  http.Respond(Method::kGet, "/v1/kms/transit/keys/k8s-prod", 200,
               R"({"data":{"latest_version":1}})");
  CHECK(client.ReadKey(std::chrono::steady_clock::now() + 1s).ok());
}

}  // namespace
}  // namespace trousseau::vault
