// Login per method against a scripted transport: paths, bodies, mounts, Vault's refusals,
// malformed answers, the secret_id file permission rule, and secrets kept out of messages.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "auth_test_util.h"
#include "fakes/temp_dir.h"
#include "vault/auth/methods.h"

using namespace trousseau;
using namespace trousseau::vault::auth;
using trousseau::authtest::LoginJson;
using trousseau::authtest::Method;
using trousseau::fakes::FakeHttpTransport;
using trousseau::fakes::TempDir;

namespace {

Deadline Soon() { return std::chrono::steady_clock::now() + std::chrono::seconds(5); }

std::string Private(const TempDir& dir, const std::string& name, const std::string& content) {
  const std::string p = dir.Write(name, content);
  ::chmod(p.c_str(), 0600);
  return p;
}

nlohmann::json BodyOf(const fakes::RecordedRequest& r) { return nlohmann::json::parse(r.body); }

}  // namespace

TEST_CASE("approle logs in with role_id and secret_id read from files", "[auth][approle]") {
  TempDir dir;
  FakeHttpTransport http;
  http.Respond(Method::kPost, "/v1/auth/approle/login", 200, LoginJson("s.approle-1", 120, true));
  AppRoleAuthenticator a("approle", dir.Write("role_id", "role-123\n"),
                         Private(dir, "secret_id", "  secret-456\n"));
  auto r = a.Login(http, Soon());
  REQUIRE(r.ok());
  CHECK(r->token->view() == "s.approle-1");
  CHECK(r->lease_duration == std::chrono::seconds(120));
  CHECK(r->renewable);
  REQUIRE(http.count() == 1);
  const auto req = http.last();
  CHECK(req.method == Method::kPost);
  CHECK(req.path == "/v1/auth/approle/login");
  CHECK_FALSE(req.had_token);
  CHECK(BodyOf(req) == nlohmann::json({{"role_id", "role-123"}, {"secret_id", "secret-456"}}));
  CHECK(a.Describe() == "approle login at auth/approle");
}

TEST_CASE("approle re-reads a rotated secret_id at each login", "[auth][approle]") {
  TempDir dir;
  FakeHttpTransport http;
  http.Respond(Method::kPost, "/v1/auth/approle/login", 200, LoginJson("s.x", 60, true));
  const std::string sid = Private(dir, "secret_id", "first");
  AppRoleAuthenticator a("approle", dir.Write("role_id", "r"), sid);
  REQUIRE(a.Login(http, Soon()).ok());
  Private(dir, "secret_id", "second");
  REQUIRE(a.Login(http, Soon()).ok());
  CHECK(BodyOf(http.last())["secret_id"] == "second");
}

TEST_CASE("custom mounts are used for every method", "[auth][mount]") {
  TempDir dir;
  FakeHttpTransport http;
  const std::string jwt = dir.Write("jwt", "aaa.bbb.ccc");
  http.Respond(Method::kPost, "/v1/auth/team-a/approle/login", 200, LoginJson("s.1", 60, true));
  http.Respond(Method::kPost, "/v1/auth/pki-clients/login", 200, LoginJson("s.2", 60, true));
  http.Respond(Method::kPost, "/v1/auth/oidc-k8s/login", 200, LoginJson("s.3", 60, true));
  http.Respond(Method::kPost, "/v1/auth/cluster-b/login", 200, LoginJson("s.4", 60, true));
  AppRoleAuthenticator approle("team-a/approle", dir.Write("role_id", "r"),
                               Private(dir, "sid", "s"));
  CertAuthenticator cert("pki-clients", "");
  JwtAuthenticator j("jwt", "oidc-k8s", "kms", jwt);
  JwtAuthenticator k("kubernetes", "cluster-b", "kms", jwt);
  CHECK(approle.Login(http, Soon())->token->view() == "s.1");
  CHECK(cert.Login(http, Soon())->token->view() == "s.2");
  CHECK(j.Login(http, Soon())->token->view() == "s.3");
  CHECK(k.Login(http, Soon())->token->view() == "s.4");
  CHECK(k.Describe() == "kubernetes login at auth/cluster-b");
}

TEST_CASE("cert login sends the role name, or an empty object", "[auth][cert]") {
  FakeHttpTransport http;
  http.Respond(Method::kPost, "/v1/auth/cert/login", 200, LoginJson("s.cert", 3600, false));
  CertAuthenticator named("cert", "kms-plugin");
  auto r = named.Login(http, Soon());
  REQUIRE(r.ok());
  CHECK_FALSE(r->renewable);
  CHECK(BodyOf(http.last()) == nlohmann::json({{"name", "kms-plugin"}}));
  CHECK_FALSE(http.last().had_token);
  CertAuthenticator anon("cert", "");
  REQUIRE(anon.Login(http, Soon()).ok());
  CHECK(BodyOf(http.last()) == nlohmann::json::object());
}

TEST_CASE("jwt and kubernetes send role and the JWT re-read from its file", "[auth][jwt]") {
  TempDir dir;
  FakeHttpTransport http;
  http.Respond(Method::kPost, "/v1/auth/jwt/login", 200, LoginJson("s.jwt", 300, true));
  http.Respond(Method::kPost, "/v1/auth/kubernetes/login", 200, LoginJson("s.k8s", 300, true));
  const std::string f = dir.Write("token", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl\n");
  JwtAuthenticator j("jwt", "jwt", "kms", f);
  REQUIRE(j.Login(http, Soon()).ok());
  CHECK(BodyOf(http.last()) ==
        nlohmann::json({{"role", "kms"}, {"jwt", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"}}));
  dir.WriteByRename("token", "new.jwt.value");
  REQUIRE(j.Login(http, Soon()).ok());
  CHECK(BodyOf(http.last())["jwt"] == "new.jwt.value");
  JwtAuthenticator k("kubernetes", "kubernetes", "kms-k8s", f);
  REQUIRE(k.Login(http, Soon()).ok());
  CHECK(http.last().path == "/v1/auth/kubernetes/login");
  CHECK(BodyOf(http.last())["role"] == "kms-k8s");
}

TEST_CASE("Vault refusing the credentials gives a clear message naming method and mount",
          "[auth][errors]") {
  TempDir dir;
  FakeHttpTransport http;
  AppRoleAuthenticator a("ops/approle", dir.Write("role_id", "r"), Private(dir, "sid", "s"));
  const std::string path = "/v1/auth/ops/approle/login";

  SECTION("400 invalid secret id") {
    http.Respond(Method::kPost, path, 400, R"({"errors":["invalid role or secret ID"]})");
    auto r = a.Login(http, Soon());
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kUnauthenticated);
    const std::string m(r.status().message());
    CHECK_THAT(m, Catch::Contains("vault auth approle (mount ops/approle)"));
    CHECK_THAT(m, Catch::Contains("login refused (HTTP 400"));
    CHECK_THAT(m, Catch::Contains("invalid role or secret ID"));
  }
  SECTION("403 permission denied") {
    http.Respond(Method::kPost, path, 403, R"({"errors":["permission denied"]})");
    auto r = a.Login(http, Soon());
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kUnauthenticated);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("HTTP 403"));
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("auth/ops/approle"));
  }
  SECTION("404 no such mount") {
    http.Respond(Method::kPost, path, 404, R"({"errors":[]})");
    auto r = a.Login(http, Soon());
    CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("vault.auth.mount"));
  }
  SECTION("503 sealed") {
    http.Respond(Method::kPost, path, 503, R"({"errors":["Vault is sealed"]})");
    auto r = a.Login(http, Soon());
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("Vault is sealed"));
  }
  SECTION("no answer at all") {
    http.Fail(Method::kPost, path, absl::UnavailableError("vault https://v:8200: cannot connect"));
    auto r = a.Login(http, Soon());
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(r.status().message()),
               Catch::Contains("vault auth approle (mount ops/approle): login failed: vault "
                               "https://v:8200: cannot connect"));
  }
}

TEST_CASE("malformed login answers are refused with a clear message", "[auth][errors]") {
  FakeHttpTransport http;
  CertAuthenticator a("cert", "");
  const std::string path = "/v1/auth/cert/login";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json{", "not valid JSON"},
      {"[1,2]", "not a JSON object"},
      {R"({"data":{}})", "no auth object"},
      {R"({"auth":null})", "no auth object"},
      {R"({"auth":{"lease_duration":10}})", "no auth.client_token string"},
      {R"({"auth":{"client_token":42}})", "no auth.client_token string"},
      {R"({"auth":{"client_token":""}})", "empty, too long or not printable"},
      {R"({"auth":{"client_token":"s.a b"}})", "empty, too long or not printable"},
      {R"({"auth":{"client_token":"s.ok","lease_duration":"60"}})", "lease_duration"},
      {R"({"auth":{"client_token":"s.ok","lease_duration":-1}})", "lease_duration"},
      {R"({"auth":{"client_token":"s.ok","renewable":"yes"}})", "renewable"},
  };
  for (const auto& [body, want] : cases) {
    INFO(body);
    http.Respond(Method::kPost, path, 200, body);
    auto r = a.Login(http, Soon());
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == absl::StatusCode::kInternal);
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("malformed login answer"));
    CHECK_THAT(std::string(r.status().message()), Catch::Contains(want));
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("vault auth cert (mount cert)"));
  }
  // lease_duration and renewable are optional: a token without them does not expire.
  http.Respond(Method::kPost, path, 200, R"({"auth":{"client_token":"s.ok"}})");
  auto r = a.Login(http, Soon());
  REQUIRE(r.ok());
  CHECK(r->lease_duration.count() == 0);
  CHECK_FALSE(r->renewable);
}

TEST_CASE("a secret_id file open to group or others is refused", "[auth][approle][files]") {
  TempDir dir;
  FakeHttpTransport http;
  http.Respond(Method::kPost, "/v1/auth/approle/login", 200, LoginJson("s.x", 60, true));
  const std::string sid = dir.Write("secret_id", "s3cr3t");
  for (mode_t mode : {0640, 0604, 0644, 0660, 0610, 0602}) {
    INFO(mode);
    ::chmod(sid.c_str(), mode);
    auto st = CheckPrivateFile(sid, "secret_id file");
    REQUIRE_FALSE(st.ok());
    CHECK(st.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(st.message()), Catch::Contains("must not be accessible by group or others"));
    CHECK_THAT(std::string(st.message()), Catch::Contains(sid));
    // ... and not only at start: a login refuses it too, without sending anything.
    AppRoleAuthenticator a("approle", dir.Write("role_id", "r"), sid);
    auto r = a.Login(http, Soon());
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("vault auth approle"));
    CHECK(http.count() == 0);
  }
  ::chmod(sid.c_str(), 0400);
  CHECK(CheckPrivateFile(sid, "secret_id file").ok());
  ::chmod(sid.c_str(), 0600);
  CHECK(CheckPrivateFile(sid, "secret_id file").ok());
  // Owned by someone else than the uid the plugin runs as after dropping privileges.
  auto st = CheckPrivateFile(sid, "secret_id file", ::geteuid() + 1);
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(std::string(st.message()), Catch::Contains("chown"));
  CHECK(CheckPrivateFile(sid, "secret_id file", ::geteuid()).ok());
  auto missing = CheckPrivateFile(dir.Path("nope"), "secret_id file");
  CHECK(missing.code() == absl::StatusCode::kNotFound);
}

TEST_CASE("unreadable or empty credential files give clear messages", "[auth][files]") {
  TempDir dir;
  FakeHttpTransport http;
  SECTION("missing role_id") {
    AppRoleAuthenticator a("approle", dir.Path("missing"), Private(dir, "sid", "s"));
    auto r = a.Login(http, Soon());
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("role_id file: cannot open"));
  }
  SECTION("empty secret_id") {
    AppRoleAuthenticator a("approle", dir.Write("role_id", "r"), Private(dir, "sid", " \n"));
    auto r = a.Login(http, Soon());
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("secret_id file is empty"));
  }
  SECTION("jwt with inner space") {
    JwtAuthenticator j("jwt", "jwt", "kms", dir.Write("jwt", "a b"));
    auto r = j.Login(http, Soon());
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(std::string(r.status().message()), Catch::Contains("vault auth jwt (mount jwt): jwt file"));
  }
  CHECK(http.count() == 0);
}

TEST_CASE("credentials never reach an error message, even when Vault echoes them",
          "[auth][secrets]") {
  TempDir dir;
  FakeHttpTransport http;
  const std::string role = "ROLEMARKER-7d1f";
  const std::string secret = "SECRETMARKER-91ab";
  const std::string jwt_h = "HEADERMARKER01", jwt_p = "PAYLOADMARKER02", jwt_s = "SIGMARKER03";
  const std::string jwt = jwt_h + "." + jwt_p + "." + jwt_s;
  AppRoleAuthenticator a("approle", dir.Write("role_id", role), Private(dir, "sid", secret));
  JwtAuthenticator j("jwt", "jwt", "kms", dir.Write("jwt", jwt));

  http.Respond(Method::kPost, "/v1/auth/approle/login", 400,
               R"({"errors":["invalid secret ID )" + secret + " for role " + role + R"("]})");
  http.Respond(Method::kPost, "/v1/auth/jwt/login", 400,
               R"({"errors":["bad token )" + jwt + " claims " + jwt_p + R"("]})");
  auto r1 = a.Login(http, Soon());
  auto r2 = j.Login(http, Soon());
  REQUIRE_FALSE(r1.ok());
  REQUIRE_FALSE(r2.ok());
  for (const std::string& m : {std::string(r1.status().message()), std::string(r2.status().message())}) {
    INFO(m);
    for (const std::string& marker : {role, secret, jwt_h, jwt_p, jwt_s}) {
      CHECK(m.find(marker) == std::string::npos);
    }
    CHECK_THAT(m, Catch::Contains("[redacted]"));
  }
  // A transport error quoting the body is scrubbed too.
  http.Fail(Method::kPost, "/v1/auth/approle/login",
            absl::UnavailableError("proxy said: " + secret));
  auto r3 = a.Login(http, Soon());
  CHECK(std::string(r3.status().message()).find(secret) == std::string::npos);
}

TEST_CASE("RedactSecrets", "[auth][secrets]") {
  const SecretBuffer s = SecretBuffer::CopyOf("abcd1234");
  const SecretBuffer tiny = SecretBuffer::CopyOf("ab");
  CHECK(RedactSecrets("x abcd1234 y abcd1234", {&s}) == "x [redacted] y [redacted]");
  CHECK(RedactSecrets("ab stays", {&tiny}) == "ab stays");
  const SecretBuffer jwt = SecretBuffer::CopyOf("hhhhhhhh.pppppppp.ssssssss");
  CHECK(RedactSecrets("claims pppppppp!", {&jwt}) == "claims [redacted]!");
  CHECK(RedactSecrets("nothing", {nullptr}) == "nothing");
}
