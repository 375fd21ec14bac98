// TransitClient::EncryptBatch / DecryptBatch against scripted answers shaped like OpenBao 2.7's
// (checked against the real server: 400 with per-item errors for a partial failure, results in
// input order echoing "reference", key_version ignored at the top level in batch mode).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <string>

#include "common/base64.h"
#include "fakes/fake_http_transport.h"
#include "fakes/fake_token_source.h"
#include "vault/transit_client.h"

namespace trousseau::vault {
namespace {

using namespace std::chrono_literals;
using Catch::Contains;
using fakes::FakeHttpTransport;
using fakes::FakeTokenSource;
using fakes::Method;
using nlohmann::json;

const std::string kEncrypt = "/v1/transit/encrypt/kubernetes";
const std::string kDecrypt = "/v1/transit/decrypt/kubernetes";

std::string Ct(int v, const std::string& fill = "c") {
  return "vault:v" + std::to_string(v) + ":" + base64::Encode(std::string(60, fill[0]));
}

struct Fixture {
  FakeHttpTransport http;
  FakeTokenSource tokens;
  TransitClient transit{http, tokens, "transit", "kubernetes"};
  Deadline Soon() const { return SystemClock().Now() + 5s; }
};

TEST_CASE("EncryptBatch sends every item with its version, reference and associated_data",
          "[transit][batch]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 200,
                 json{{"request_id", "r-1"},
                      {"data", {{"batch_results", {{{"ciphertext", Ct(3, "a")}, {"key_version", 3}, {"reference", "0"}},
                                                   {{"ciphertext", Ct(3, "b")}, {"key_version", 3}, {"reference", "1"}}}}}}}
                     .dump());
  auto r = f.transit.EncryptBatch({{"seed-one", 3, ""}, {"seed-two", 3, "bind\x01"}}, f.Soon());
  REQUIRE(r.ok());
  REQUIRE(r->size() == 2);
  REQUIRE((*r)[0].ok());
  CHECK((*r)[0]->ciphertext == Ct(3, "a"));
  CHECK((*r)[1]->ciphertext == Ct(3, "b"));
  CHECK((*r)[1]->version == 3);
  CHECK((*r)[1]->request_id == "r-1");
  const json body = json::parse(f.http.last().body);
  CHECK_FALSE(body.contains("key_version"));  // ignored by OpenBao at the top level
  const auto& items = body["batch_input"];
  REQUIRE(items.size() == 2);
  CHECK(items[0]["plaintext"] == base64::Encode("seed-one"));
  CHECK(items[0]["key_version"] == 3);
  CHECK(items[0]["reference"] == "0");
  CHECK_FALSE(items[0].contains("associated_data"));
  CHECK(items[1]["associated_data"] == base64::Encode("bind\x01"));
  CHECK(items[1]["reference"] == "1");
}

TEST_CASE("a partially failed batch (HTTP 400) maps each item's error to its own code",
          "[transit][batch]") {
  Fixture f;
  f.http.Respond(Method::kPost, kDecrypt, 400,
                 json{{"data", {{"batch_results",
                                 {{{"plaintext", base64::Encode("good")}, {"reference", "0"}},
                                  {{"plaintext", ""}, {"error", "cipher: message authentication failed"}, {"reference", "1"}},
                                  {{"plaintext", ""}, {"error", "ciphertext or signature version is disallowed by policy (too old)"}, {"reference", "2"}}}}}}}
                     .dump());
  auto r = f.transit.DecryptBatch({{Ct(1), ""}, {Ct(1, "x"), ""}, {Ct(1, "y"), ""}}, f.Soon());
  REQUIRE(r.ok());
  REQUIRE(r->size() == 3);
  REQUIRE((*r)[0].ok());
  CHECK((*r)[0]->plaintext.view() == "good");
  CHECK((*r)[1].status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string((*r)[1].status().message()), Contains("message authentication failed"));
  CHECK((*r)[2].status().code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("an encrypt item error is INVALID_ARGUMENT for that item only", "[transit][batch]") {
  Fixture f;
  f.http.Respond(Method::kPost, kEncrypt, 400,
                 json{{"data", {{"batch_results",
                                 {{{"error", "requested version for encryption is higher than the latest key version"}, {"reference", "0"}},
                                  {{"ciphertext", Ct(2)}, {"key_version", 2}, {"reference", "1"}}}}}}}
                     .dump());
  auto r = f.transit.EncryptBatch({{"a", 5, ""}, {"b", 2, ""}}, f.Soon());
  REQUIRE(r.ok());
  CHECK((*r)[0].status().code() == absl::StatusCode::kInvalidArgument);
  CHECK((*r)[1].ok());
}

TEST_CASE("an answer out of order or of the wrong length fails the whole batch",
          "[transit][batch]") {
  Fixture f;
  SECTION("swapped references") {
    f.http.Respond(Method::kPost, kDecrypt, 200,
                   json{{"data", {{"batch_results", {{{"plaintext", base64::Encode("b")}, {"reference", "1"}},
                                                     {{"plaintext", base64::Encode("a")}, {"reference", "0"}}}}}}}.dump());
    auto r = f.transit.DecryptBatch({{Ct(1), ""}, {Ct(1, "x"), ""}}, f.Soon());
    CHECK(r.status().code() == absl::StatusCode::kInternal);
    CHECK_THAT(std::string(r.status().message()), Contains("out of order"));
  }
  SECTION("one result short") {
    f.http.Respond(Method::kPost, kDecrypt, 200,
                   json{{"data", {{"batch_results", {{{"plaintext", base64::Encode("a")}}}}}}}.dump());
    auto r = f.transit.DecryptBatch({{Ct(1), ""}, {Ct(1, "x"), ""}}, f.Soon());
    CHECK(r.status().code() == absl::StatusCode::kInternal);
    CHECK_THAT(std::string(r.status().message()), Contains("1 batch results for 2 items"));
  }
  SECTION("no references at all: taken in order") {
    f.http.Respond(Method::kPost, kDecrypt, 200,
                   json{{"data", {{"batch_results", {{{"plaintext", base64::Encode("a")}},
                                                     {{"plaintext", base64::Encode("b")}}}}}}}.dump());
    auto r = f.transit.DecryptBatch({{Ct(1), ""}, {Ct(1, "x"), ""}}, f.Soon());
    REQUIRE(r.ok());
    CHECK((*r)[1]->plaintext.view() == "b");
  }
}

TEST_CASE("a batch refused as a whole or failing as a whole is the outer status",
          "[transit][batch]") {
  Fixture f;
  SECTION("400 without batch results") {
    f.http.Respond(Method::kPost, kEncrypt, 400,
                   R"({"errors":["refused JSON input due to high complexity: exceeded maximum number of strings"]})");
    auto r = f.transit.EncryptBatch({{"a", 0, ""}, {"b", 0, ""}}, f.Soon());
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(r.status().message()), Contains("high complexity"));
  }
  SECTION("503") {
    f.http.Respond(Method::kPost, kEncrypt, 503, R"({"errors":["Vault is sealed"]})");
    auto r = f.transit.EncryptBatch({{"a", 0, ""}}, f.Soon());
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  }
  SECTION("500") {
    f.http.Respond(Method::kPost, kDecrypt, 500, R"({"errors":["internal error"]})");
    auto r = f.transit.DecryptBatch({{Ct(1), ""}}, f.Soon());
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(r.status().message()), Contains("Vault internal error (500)"));
  }
  SECTION("no answer") {
    f.http.Fail(Method::kPost, kDecrypt, absl::DeadlineExceededError("vault: timed out"));
    auto r = f.transit.DecryptBatch({{Ct(1), ""}}, f.Soon());
    CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  }
}

}  // namespace
}  // namespace trousseau::vault
