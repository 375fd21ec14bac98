// lookup-self and renew-self: paths, token header, increment, answers and errors.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "auth_test_util.h"
#include "vault/auth/token_calls.h"

using namespace trousseau;
using namespace trousseau::vault::auth;
using namespace trousseau::authtest;

namespace {
Deadline Soon() { return std::chrono::steady_clock::now() + std::chrono::seconds(5); }
std::shared_ptr<const SecretBuffer> Tok(const char* t) {
  return std::make_shared<const SecretBuffer>(SecretBuffer::CopyOf(t));
}
}  // namespace

TEST_CASE("lookup-self reads ttl and renewable with the token", "[auth][lookup]") {
  FakeHttpTransport http;
  http.Respond(Method::kGet, "/v1/auth/token/lookup-self", 200, LookupJson(42, true));
  auto r = LookupSelf(http, Tok("s.t1"), Soon());
  REQUIRE(r.ok());
  CHECK(r->ttl == std::chrono::seconds(42));
  CHECK(r->renewable);
  CHECK(http.last().token == "s.t1");
  CHECK_FALSE(http.last().had_body);
}

TEST_CASE("lookup-self errors", "[auth][lookup]") {
  FakeHttpTransport http;
  const std::string p = "/v1/auth/token/lookup-self";
  http.Respond(Method::kGet, p, 403, R"({"errors":["permission denied"]})");
  CHECK(LookupSelf(http, Tok("s.t"), Soon()).status().code() == absl::StatusCode::kPermissionDenied);
  http.Respond(Method::kGet, p, 503, "");
  CHECK(LookupSelf(http, Tok("s.t"), Soon()).status().code() == absl::StatusCode::kUnavailable);
  http.Respond(Method::kGet, p, 200, R"({"data":{"renewable":true}})");
  CHECK_THAT(std::string(LookupSelf(http, Tok("s.t"), Soon()).status().message()),
             Catch::Contains("data.ttl"));
  http.Respond(Method::kGet, p, 200, "{");
  CHECK(LookupSelf(http, Tok("s.t"), Soon()).status().code() == absl::StatusCode::kInternal);
}

TEST_CASE("renew-self asks for the increment and reads the lease", "[auth][renew]") {
  FakeHttpTransport http;
  http.Respond(Method::kPost, "/v1/auth/token/renew-self", 200, RenewJson(3, true));
  auto r = RenewSelf(http, Tok("s.t2"), std::chrono::seconds(4), Soon());
  REQUIRE(r.ok());
  CHECK(r->ttl == std::chrono::seconds(3));
  CHECK(r->renewable);
  CHECK(http.last().token == "s.t2");
  CHECK(nlohmann::json::parse(http.last().body) == nlohmann::json({{"increment", 4}}));
}

TEST_CASE("renew-self errors name the call and never the token", "[auth][renew]") {
  FakeHttpTransport http;
  const std::string p = "/v1/auth/token/renew-self";
  http.Respond(Method::kPost, p, 403, R"({"errors":["permission denied"]})");
  auto r = RenewSelf(http, Tok("s.SECRETTOKEN"), std::chrono::seconds(4), Soon());
  CHECK(r.status().code() == absl::StatusCode::kPermissionDenied);
  CHECK_THAT(std::string(r.status().message()), Catch::Contains("renew-self"));
  CHECK(std::string(r.status().message()).find("SECRETTOKEN") == std::string::npos);
  http.Fail(Method::kPost, p, absl::DeadlineExceededError("timed out"));
  CHECK(RenewSelf(http, Tok("s.t"), std::chrono::seconds(4), Soon()).status().code() ==
        absl::StatusCode::kDeadlineExceeded);
  http.Respond(Method::kPost, p, 200, R"({"auth":{}})");
  CHECK_THAT(std::string(RenewSelf(http, Tok("s.t"), std::chrono::seconds(4), Soon()).status().message()),
             Catch::Contains("lease_duration"));
}
