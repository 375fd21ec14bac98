// The factory: start-time credential checks and which source each method gets.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "auth_test_util.h"
#include "common/clock.h"
#include "fakes/temp_dir.h"
#include "vault/auth/factory.h"

using namespace trousseau;
using namespace trousseau::vault::auth;
using trousseau::fakes::FakeHttpTransport;
using trousseau::fakes::TempDir;

TEST_CASE("CheckCredentials per method", "[auth][factory]") {
  TempDir dir;
  config::AuthConfig a;
  SECTION("token file") {
    a.method = config::AuthMethod::kToken;
    a.token_file = dir.Write("token", "s.abc\n");
    CHECK(CheckCredentials(a, false).ok());
    a.token_file = dir.Path("none");
    auto st = CheckCredentials(a, false);
    CHECK_THAT(std::string(st.message()), Catch::StartsWith("vault.auth (method token): token file"));
  }
  SECTION("approle: secret_id mode") {
    a.method = config::AuthMethod::kAppRole;
    a.role_id_file = dir.Write("role_id", "r");
    a.secret_id_file = dir.Write("secret_id", "s");
    ::chmod(a.secret_id_file.c_str(), 0644);
    auto st = CheckCredentials(a, false);
    REQUIRE_FALSE(st.ok());
    CHECK_THAT(std::string(st.message()), Catch::Contains("vault.auth (method approle): secret_id file"));
    CHECK_THAT(std::string(st.message()), Catch::Contains("0644"));
    ::chmod(a.secret_id_file.c_str(), 0400);
    CHECK(CheckCredentials(a, false).ok());
    CHECK(CheckCredentials(a, false, ::geteuid()).ok());
    CHECK_FALSE(CheckCredentials(a, false, ::geteuid() + 7).ok());
  }
  SECTION("approle: role_id must stay readable after the privilege drop") {
    a.method = config::AuthMethod::kAppRole;
    a.role_id_file = dir.Write("role_id", "r");
    a.secret_id_file = dir.Write("secret_id", "s");
    ::chmod(a.secret_id_file.c_str(), 0400);
    ::chmod(a.role_id_file.c_str(), 0400);
    // Owned by us: fine for us, not for another uid (secret_id checked first, so make it ok).
    CHECK(CheckCredentials(a, false, ::geteuid()).ok());
    ::chmod(a.role_id_file.c_str(), 0444);
    CHECK(CheckCredentials(a, false).ok());
  }
  SECTION("cert needs a client identity") {
    a.method = config::AuthMethod::kCert;
    CHECK_FALSE(CheckCredentials(a, false).ok());
    CHECK(CheckCredentials(a, true).ok());
  }
  SECTION("jwt and kubernetes need a readable, non-empty jwt file") {
    for (auto m : {config::AuthMethod::kJwt, config::AuthMethod::kKubernetes}) {
      a.method = m;
      a.jwt_file = dir.Write("jwt", "");
      CHECK_THAT(std::string(CheckCredentials(a, false).message()), Catch::Contains("jwt file is empty"));
      a.jwt_file = dir.Write("jwt", "a.b.c");
      CHECK(CheckCredentials(a, false).ok());
    }
  }
}

TEST_CASE("MakeAuthenticator and MakeTokenSource", "[auth][factory]") {
  TempDir dir;
  FakeHttpTransport http;
  config::VaultConfig v;
  v.auth.method = config::AuthMethod::kToken;
  v.auth.token_file = dir.Write("token", "s.abc");
  auto src = MakeTokenSource(v, http, SystemClock());
  REQUIRE(src.ok());
  CHECK_THAT((*src)->Describe(), Catch::StartsWith("token file"));

  v.auth = {};
  v.auth.method = config::AuthMethod::kAppRole;
  v.auth.mount = "approle";
  v.auth.role_id_file = dir.Write("role_id", "r");
  v.auth.secret_id_file = dir.Write("sid", "s");
  auto a = MakeAuthenticator(v.auth);
  REQUIRE(a.ok());
  CHECK((*a)->Describe() == "approle login at auth/approle");
  auto ls = MakeTokenSource(v, http, SystemClock());
  REQUIRE(ls.ok());
  CHECK((*ls)->Describe() == "approle login at auth/approle (token renewed by trousseau)");

  v.auth = {};
  v.auth.method = config::AuthMethod::kKubernetes;
  v.auth.mount = "";
  v.auth.role = "kms";
  v.auth.jwt_file = "/x";
  CHECK((*MakeAuthenticator(v.auth))->Describe() == "kubernetes login at auth/kubernetes");
  v.auth.method = config::AuthMethod::kJwt;
  v.auth.mount = "oidc";
  CHECK((*MakeAuthenticator(v.auth))->Describe() == "jwt login at auth/oidc");
  v.auth.method = config::AuthMethod::kCert;
  v.auth.mount = "";
  CHECK((*MakeAuthenticator(v.auth))->Describe() == "cert login at auth/cert");
  v.auth.method = config::AuthMethod::kToken;
  CHECK_FALSE(MakeAuthenticator(v.auth).ok());
}
