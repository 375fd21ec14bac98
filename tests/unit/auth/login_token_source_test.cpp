// Token lifecycle on a fake clock (blocking mode: the background thread parks until the test
// advances virtual time). Nothing here sleeps; real-time bounds only stop a broken test hanging.
#include <atomic>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include "auth_test_util.h"
#include "fakes/fake_clock.h"
#include "fakes/log_capture.h"
#include "fakes/temp_dir.h"
#include "vault/auth/login_token_source.h"
#include "vault/auth/methods.h"

using namespace trousseau;
using namespace trousseau::vault::auth;
using namespace trousseau::authtest;
using namespace std::chrono_literals;
using trousseau::fakes::FakeClock;
using trousseau::fakes::LogCapture;
using trousseau::fakes::TempDir;

namespace {

const std::string kLogin = "/v1/auth/cert/login";
const std::string kLookup = "/v1/auth/token/lookup-self";
const std::string kRenew = "/v1/auth/token/renew-self";

struct Fixture {
  FakeHttpTransport http;
  GatedTransport gated{http};
  FakeClock clock;
  std::atomic<double> r{0.0};
  std::unique_ptr<LoginTokenSource> src;

  explicit Fixture(long ttl = 30, bool renewable = true) {
    clock.set_blocking(true);
    http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-1", ttl, renewable));
    http.Respond(Method::kGet, kLookup, 200, LookupJson(ttl, renewable));
    http.Respond(Method::kPost, kRenew, 200, RenewJson(ttl, renewable));
  }
  void Make(std::unique_ptr<Authenticator> a = nullptr, LifecycleOptions o = {}) {
    o.random = [this] { return r.load(); };
    if (!a) a = std::make_unique<CertAuthenticator>("cert", "");
    src = std::make_unique<LoginTokenSource>(std::move(a), gated, clock, std::move(o));
  }
  Deadline In(std::chrono::milliseconds d) const { return clock.Now() + d; }
  size_t Logins() const { return http.count(Method::kPost, kLogin); }
  size_t Renewals() const { return http.count(Method::kPost, kRenew); }
  // Advances time and waits until the background thread acted and parked again.
  void AdvanceAndSettle(std::chrono::milliseconds d, size_t extra_waits = 1) {
    const size_t w = clock.waits();
    clock.Advance(d);
    REQUIRE(clock.WaitForWaits(w + extra_waits));
  }
  std::string TokenNow() {
    auto t = src->Token(In(5s));
    REQUIRE(t.ok());
    return std::string((*t)->view());
  }
};

}  // namespace

TEST_CASE("the first Token() logs in once, looks the token up and plans a renewal at 2/3 TTL",
          "[auth][lifecycle]") {
  Fixture f;
  f.Make();
  auto t = f.src->Token(f.In(5s));
  REQUIRE(t.ok());
  CHECK((*t)->view() == "s.tok-1");
  CHECK(f.Logins() == 1);
  CHECK(f.http.count(Method::kGet, kLookup) == 1);
  CHECK(f.http.requests()[1].token == "s.tok-1");
  auto s = f.src->Snapshot();
  CHECK(s.method == "cert");
  CHECK(s.mount == "cert");
  CHECK(s.has_token);
  CHECK(s.expires);
  CHECK(s.renewable);
  CHECK(s.remaining_ttl == 30s);
  CHECK(s.next_action == "renew");
  CHECK(s.next_action_in == 20s);
  CHECK(s.login_count == 1);
  CHECK(s.last_login_ok);
  CHECK(s.last_login_at.has_value());
  // Later calls reuse the token: no request.
  auto t2 = f.src->Token(f.In(5s));
  REQUIRE(t2.ok());
  CHECK(t2->get() == t->get());
  CHECK(f.http.count() == 2);
}

TEST_CASE("renewal happens at 2/3 of the TTL; jitter only makes it earlier, by at most 10%",
          "[auth][lifecycle][renew]") {
  for (double r : {0.0, 0.25, 0.5, 0.999}) {
    INFO("jitter draw " << r);
    Fixture f;
    f.r = r;
    f.Make();
    f.TokenNow();
    auto s = f.src->Snapshot();
    const auto want = std::chrono::milliseconds(static_cast<int64_t>(30000.0 * (2.0 / 3.0) * (1 - 0.1 * r)));
    CHECK(std::chrono::abs(s.next_action_in - want) <= 1ms);
    CHECK(s.next_action_in >= 18s);   // 0.6 x TTL
    CHECK(s.next_action_in <= 20s);   // 2/3 x TTL
    // Just before: nothing. At the planned time: one renew-self with the token and increment.
    f.clock.Advance(s.next_action_in - 1ms);
    CHECK(f.Renewals() == 0);
    f.AdvanceAndSettle(1ms);
    CHECK(f.Renewals() == 1);
    const auto req = f.http.last();
    CHECK(req.path == kRenew);
    CHECK(req.token == "s.tok-1");
    CHECK(nlohmann::json::parse(req.body)["increment"] == 30);
    auto s2 = f.src->Snapshot();
    CHECK(s2.renewal_count == 1);
    CHECK(s2.last_renewal_ok);
    CHECK(s2.remaining_ttl == 30s);
    CHECK(s2.next_action == "renew");
    CHECK(std::chrono::abs(s2.next_action_in - want) <= 1ms);
    CHECK(f.Logins() == 1);
  }
}

TEST_CASE("continuous renewal of a short token: many renewals, one login", "[auth][lifecycle][renew]") {
  Fixture f(4, true);
  f.Make();
  f.TokenNow();
  for (int i = 0; i < 50; ++i) {
    const auto in = f.src->Snapshot().next_action_in;
    f.AdvanceAndSettle(in);
    REQUIRE(f.src->Snapshot().has_token);
  }
  CHECK(f.Renewals() == 50);
  CHECK(f.Logins() == 1);
  CHECK(f.src->Snapshot().renewal_count == 50);
}

TEST_CASE("a renewal granting less than asked (near max TTL) leads to a new login",
          "[auth][lifecycle][renew][maxttl]") {
  LogCapture logs;
  Fixture f;
  f.Make();
  f.TokenNow();
  f.http.Respond(Method::kPost, kRenew, 200, RenewJson(12, true));
  f.AdvanceAndSettle(20s);
  CHECK(f.Renewals() == 1);
  auto s = f.src->Snapshot();
  CHECK(s.next_action == "login");
  // The margin a renewal keeps is 1/3 of the 30 s asked (10 s): the login starts 10 s before
  // the 12 s left run out, not at 2/3 of the 12 s (which would leave only 4 s).
  CHECK(s.next_action_in == 2s);
  CHECK(s.remaining_ttl == 12s);
  // The old token serves until the new login.
  CHECK(f.TokenNow() == "s.tok-1");
  f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 30, true));
  f.AdvanceAndSettle(2s);
  CHECK(f.Logins() == 2);
  CHECK(f.Renewals() == 1);  // no renewal of a capped token
  CHECK(f.TokenNow() == "s.tok-2");
  s = f.src->Snapshot();
  CHECK(s.next_action == "renew");
  CHECK(s.max_ttl_logins == 1);
  CHECK(s.login_count == 2);
  auto ev = logs.events("auth.login");
  REQUIRE(ev.size() == 2);
  CHECK(ev[1]["reason"] == "max_ttl");
}

TEST_CASE("a renewal granting less than the margin logs in at once, before expiry",
          "[auth][lifecycle][renew][maxttl]") {
  Fixture f;
  f.Make();
  f.TokenNow();
  f.http.Respond(Method::kPost, kRenew, 200, RenewJson(3, true));  // < 10 s margin
  f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 30, true));
  f.AdvanceAndSettle(20s);  // the renewal, then the login right after it: no wait between
  CHECK(f.Renewals() == 1);
  CHECK(f.Logins() == 2);
  CHECK(f.TokenNow() == "s.tok-2");
  CHECK(f.src->Snapshot().max_ttl_logins == 1);
}

TEST_CASE("an explicit max TTL from lookup-self: the login replaces the renewal that would "
          "leave less than the margin",
          "[auth][lifecycle][renew][maxttl]") {
  LogCapture logs;
  Fixture f;
  // ttl 30 s, explicit max TTL 45 s: renew at 20 s (max ends 25 s later, > 10 s margin); the
  // next renewal, at 40 s, would leave 5 s: log in at 35 s instead, 10 s before the end.
  f.http.Respond(Method::kGet, kLookup, 200,
                 R"({"data":{"ttl":30,"renewable":true,"explicit_max_ttl":45}})");
  f.http.Respond(Method::kPost, kRenew, 200, RenewJson(30, true));
  f.Make();
  f.TokenNow();
  auto s = f.src->Snapshot();
  CHECK(s.next_action == "renew");
  CHECK(s.next_action_in == 20s);
  f.AdvanceAndSettle(20s);
  CHECK(f.Renewals() == 1);
  s = f.src->Snapshot();
  CHECK(s.next_action == "login");
  CHECK(s.next_action_in == 15s);
  CHECK(s.remaining_ttl == 25s);  // bounded by the max TTL, not the 30 s the renewal answered
  f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 30, true));
  f.clock.Advance(15s - 1ms);
  CHECK(f.Logins() == 1);
  f.AdvanceAndSettle(1ms);
  CHECK(f.Logins() == 2);
  CHECK(f.Renewals() == 1);
  CHECK(f.src->Snapshot().max_ttl_logins == 1);
  CHECK(logs.events("auth.login").back()["reason"] == "max_ttl");
  CHECK(logs.events("auth.login").front()["max_ttl_s"] == 45);
}

TEST_CASE("a 4 s token with a 60 s max TTL (test_auth proof 1): renewed, then replaced by a "
          "max_ttl login that starts before the max TTL ends",
          "[auth][lifecycle][renew][maxttl]") {
  // A Vault that grants min(asked, whole seconds left before the 60 s max TTL), as OpenBao does
  // for a role's token_max_ttl (invisible in lookup-self).
  LogCapture logs;
  for (double r : {0.0, 0.5, 0.999}) {
    INFO("jitter draw " << r);
    Fixture f(4, true);
    f.r = r;
    f.Make();
    f.TokenNow();
    const auto t0 = f.clock.Now();
    while (f.Logins() == 1) {
      const auto in = f.src->Snapshot().next_action_in;
      const auto at = f.clock.Now() + in - t0;
      REQUIRE(at < 60s);
      const auto left = std::chrono::duration_cast<std::chrono::seconds>(60s - at);
      f.http.Respond(Method::kPost, kRenew, 200, RenewJson(std::min<long>(4, left.count()), true));
      f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 4, true));
      f.AdvanceAndSettle(in);
      // Every step keeps a usable token.
      REQUIRE(f.src->Snapshot().has_token);
    }
    const auto login_at = f.clock.Now() - t0;
    CHECK(login_at < 60s - 1s);  // at least the 4/3 s margin (less whole-second rounding)
    CHECK(login_at > 50s);
    CHECK(f.TokenNow() == "s.tok-2");
    CHECK(f.src->Snapshot().max_ttl_logins == 1);
    CHECK(logs.events("auth.login").back()["reason"] == "max_ttl");
  }
}

TEST_CASE("a non-renewable token is replaced by a login at 2/3 of its TTL", "[auth][lifecycle]") {
  Fixture f(30, false);
  f.Make();
  CHECK(f.TokenNow() == "s.tok-1");
  auto s = f.src->Snapshot();
  CHECK_FALSE(s.renewable);
  CHECK(s.next_action == "login");
  CHECK(s.next_action_in == 20s);
  f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 30, false));
  f.AdvanceAndSettle(20s);
  CHECK(f.Logins() == 2);
  CHECK(f.Renewals() == 0);
  CHECK(f.TokenNow() == "s.tok-2");
}

TEST_CASE("a token without TTL is never renewed", "[auth][lifecycle]") {
  Fixture f(0, false);
  f.Make();
  f.TokenNow();
  auto s = f.src->Snapshot();
  CHECK(s.has_token);
  CHECK_FALSE(s.expires);
  CHECK(s.next_action == "none");
  f.AdvanceAndSettle(2h);  // the idle wake-up: the thread looks and parks again
  CHECK(f.Renewals() == 0);
  CHECK(f.Logins() == 1);
}

TEST_CASE("lookup-self failing falls back to the login answer", "[auth][lifecycle]") {
  LogCapture logs;
  Fixture f;
  f.http.Respond(Method::kGet, kLookup, 403, R"({"errors":["permission denied"]})");
  f.Make();
  CHECK(f.TokenNow() == "s.tok-1");
  auto s = f.src->Snapshot();
  CHECK(s.remaining_ttl == 30s);
  CHECK(s.next_action == "renew");
  CHECK(logs.events("auth.lookup").size() == 1);
}

TEST_CASE("a failed renewal leads to a new login", "[auth][lifecycle][renew]") {
  Fixture f;
  f.Make();
  f.TokenNow();
  SECTION("Vault unavailable: the old token serves until the new login") {
    f.http.Fail(Method::kPost, kRenew, absl::UnavailableError("vault https://v: cannot connect"));
    f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 30, true));
    f.AdvanceAndSettle(20s);
    CHECK(f.Renewals() == 1);
    CHECK(f.Logins() == 2);
    CHECK(f.TokenNow() == "s.tok-2");
    auto s = f.src->Snapshot();
    CHECK(s.renewal_failures == 1);
    CHECK_FALSE(s.last_renewal_ok);
    CHECK_THAT(s.last_renewal_error, Catch::Contains("renew-self"));
  }
  SECTION("refused (403): the token is dropped and callers wait for the login") {
    f.http.Respond(Method::kPost, kRenew, 403, R"({"errors":["permission denied"]})");
    f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 30, true));
    f.gated.Close(kLogin);
    f.clock.Advance(20s);
    REQUIRE(f.gated.WaitBlocked(1));
    CHECK_FALSE(f.src->Snapshot().has_token);
    const size_t w = f.clock.waits();
    absl::StatusOr<std::shared_ptr<const SecretBuffer>> got = absl::UnknownError("unset");
    std::thread caller([&] { got = f.src->Token(f.In(5s)); });
    REQUIRE(f.clock.WaitForWaits(w + 1));  // the caller is waiting
    f.gated.Open();
    caller.join();
    REQUIRE(got.ok());
    CHECK((*got)->view() == "s.tok-2");
    CHECK(f.Logins() == 2);
  }
}

TEST_CASE("a login waits for a renewal in flight: never two at once", "[auth][lifecycle][concurrency]") {
  Fixture f;
  f.Make();
  auto t1 = f.src->Token(f.In(5s));
  REQUIRE(t1.ok());
  f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 30, true));
  f.gated.Close(kRenew);
  f.clock.Advance(20s);
  REQUIRE(f.gated.WaitBlocked(1));  // the renewal hangs in Vault
  f.src->Invalidate(*t1);           // meanwhile Vault refuses the token
  const size_t w = f.clock.waits();
  absl::StatusOr<std::shared_ptr<const SecretBuffer>> got = absl::UnknownError("unset");
  std::thread caller([&] { got = f.src->Token(f.In(30s)); });
  REQUIRE(f.clock.WaitForWaits(w + 1));
  CHECK(f.Logins() == 1);  // no login while the renewal is in flight
  f.gated.Open();          // the renewal answers; its result no longer matters
  caller.join();
  REQUIRE(got.ok());
  CHECK((*got)->view() == "s.tok-2");
  CHECK(f.Logins() == 2);
  CHECK(f.Renewals() == 1);
}

TEST_CASE("Invalidate after a 403 logs in again once; stale tokens are ignored",
          "[auth][lifecycle][invalidate]") {
  Fixture f;
  f.Make();
  auto t1 = f.src->Token(f.In(5s));
  REQUIRE(t1.ok());
  f.clock.Advance(5s);  // older than the fresh-token window
  f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 30, true));
  std::vector<std::thread> ts;
  for (int i = 0; i < 8; ++i) ts.emplace_back([&] { f.src->Invalidate(*t1); });
  for (auto& t : ts) t.join();
  CHECK(f.TokenNow() == "s.tok-2");
  CHECK(f.Logins() == 2);
  // The requests still in flight with the old token report it too: nothing happens.
  f.src->Invalidate(*t1);
  f.src->Invalidate(nullptr);
  CHECK(f.TokenNow() == "s.tok-2");
  CHECK(f.Logins() == 2);
}

TEST_CASE("fresh tokens refused again and again do not cause a login storm",
          "[auth][lifecycle][invalidate]") {
  LogCapture logs;
  Fixture f;
  f.Make();
  auto t1 = f.src->Token(f.In(5s));
  REQUIRE(t1.ok());
  // First refusal of a fresh token: could be a revocation; log in again at once.
  f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-2", 30, true));
  f.src->Invalidate(*t1);
  auto t2 = f.src->Token(f.In(5s));
  REQUIRE(t2.ok());
  CHECK((*t2)->view() == "s.tok-2");
  // Second in a row: a policy problem. Keep the token, log in again only after a backoff.
  for (int i = 0; i < 20; ++i) f.src->Invalidate(*t2);
  CHECK(f.TokenNow() == "s.tok-2");
  CHECK(f.Logins() == 2);
  auto s = f.src->Snapshot();
  CHECK(s.next_action == "login");
  CHECK(s.next_action_in >= 500ms);
  CHECK(s.next_action_in <= 1s);
  CHECK(logs.events("auth.invalidate").size() == 2);
  f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-3", 30, true));
  f.AdvanceAndSettle(s.next_action_in);
  CHECK(f.Logins() == 3);
  CHECK(f.TokenNow() == "s.tok-3");
}

TEST_CASE("single flight: many callers during a slow login make exactly one login request",
          "[auth][lifecycle][concurrency]") {
  Fixture f;
  f.gated.Close(kLogin);
  f.Make();
  constexpr int kCallers = 24;
  std::vector<absl::StatusOr<std::shared_ptr<const SecretBuffer>>> got(
      kCallers, absl::UnknownError("unset"));
  std::vector<std::thread> ts;
  const Deadline deadline = f.In(30s);
  for (int i = 0; i < kCallers; ++i) {
    ts.emplace_back([&, i] { got[i] = f.src->Token(deadline); });
  }
  REQUIRE(f.gated.WaitBlocked(1));
  REQUIRE(f.clock.WaitForWaits(kCallers));  // every caller is waiting
  f.clock.Advance(3s);                      // the login takes 3 s of virtual time
  f.gated.Open();
  for (auto& t : ts) t.join();
  for (const auto& g : got) {
    REQUIRE(g.ok());
    CHECK((*g)->view() == "s.tok-1");
  }
  CHECK(f.Logins() == 1);
  CHECK(f.http.count(Method::kGet, kLookup) == 1);
  auto s = f.src->Snapshot();
  CHECK(s.login_count == 1);
  CHECK(s.longest_wait == 3s);
  CHECK(s.last_login_duration == 3s);
}

TEST_CASE("callers give up at their own deadline while the login hangs", "[auth][lifecycle]") {
  Fixture f;
  f.gated.Close(kLogin);
  f.Make();
  absl::StatusOr<std::shared_ptr<const SecretBuffer>> got = absl::UnknownError("unset");
  std::thread caller([&] { got = f.src->Token(f.In(2s)); });
  REQUIRE(f.gated.WaitBlocked(1));
  REQUIRE(f.clock.WaitForWaits(1));
  f.clock.Advance(2s);
  caller.join();
  REQUIRE_FALSE(got.ok());
  CHECK(got.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK_THAT(std::string(got.status().message()), Catch::Contains("vault auth cert (mount cert)"));
  CHECK_THAT(std::string(got.status().message()), Catch::Contains("deadline"));
  // A deadline already past fails at once.
  auto late = f.src->Token(f.clock.Now() - 1ms);
  CHECK(late.status().code() == absl::StatusCode::kDeadlineExceeded);
  // The login finishes for the next caller; still one login request.
  f.gated.Open();
  CHECK(f.TokenNow() == "s.tok-1");
  CHECK(f.Logins() == 1);
  CHECK(f.src->Snapshot().longest_wait == 2s);
}

TEST_CASE("failed logins back off 1 s doubling to 30 s, and callers get the last error at once",
          "[auth][lifecycle][backoff]") {
  Fixture f;
  f.http.Respond(Method::kPost, kLogin, 400, R"({"errors":["invalid certificate or no role"]})");
  f.r = 0.0;  // waits are b/2
  f.Make();
  auto first = f.src->Token(f.In(5s));
  REQUIRE_FALSE(first.ok());
  CHECK(first.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(first.status().message()),
             Catch::Contains("vault auth cert (mount cert): login refused (HTTP 400"));
  CHECK_THAT(std::string(first.status().message()), Catch::Contains("invalid certificate or no role"));
  CHECK(f.Logins() == 1);
  // No storm: 100 callers during the backoff, no request, the last error with the retry time.
  for (int i = 0; i < 100; ++i) {
    auto again = f.src->Token(f.In(5s));
    REQUIRE_FALSE(again.ok());
    if (i == 0) {
      CHECK_THAT(std::string(again.status().message()), Catch::Contains("next attempt in 500 ms"));
      CHECK_THAT(std::string(again.status().message()), Catch::Contains("login refused"));
    }
  }
  CHECK(f.Logins() == 1);
  auto s = f.src->Snapshot();
  CHECK(s.login_failures == 1);
  CHECK(s.consecutive_login_failures == 1);
  CHECK(s.backoff_remaining == 500ms);
  CHECK_FALSE(s.last_login_ok);
  CHECK_THAT(s.last_login_error, Catch::Contains("login refused"));
  // The background thread retries on its own, each wait twice the last, capped at 30 s.
  const std::vector<std::chrono::milliseconds> want = {1000ms, 2000ms, 4000ms, 8000ms,
                                                       15000ms, 15000ms, 15000ms};
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("retry " << i);
    f.AdvanceAndSettle(f.src->Snapshot().backoff_remaining);
    CHECK(f.Logins() == i + 2);
    CHECK(f.src->Snapshot().backoff_remaining == want[i]);
  }
  // With the largest jitter draw the wait is the full bound.
  f.r = 0.999999;
  f.AdvanceAndSettle(f.src->Snapshot().backoff_remaining);
  CHECK(std::chrono::abs(f.src->Snapshot().backoff_remaining - 30s) <= 1ms);
  // Fixed credentials: the next attempt succeeds and everything resets.
  f.http.Respond(Method::kPost, kLogin, 200, LoginJson("s.tok-ok", 30, true));
  f.AdvanceAndSettle(f.src->Snapshot().backoff_remaining);
  CHECK(f.TokenNow() == "s.tok-ok");
  s = f.src->Snapshot();
  CHECK(s.consecutive_login_failures == 0);
  CHECK(s.backoff_remaining == 0ms);
  CHECK(s.login_count == 1);
  CHECK(s.login_failures == 9);
  CHECK(s.last_login_error.empty());
}

TEST_CASE("a proactive login that fails keeps the old token until it expires",
          "[auth][lifecycle][backoff]") {
  Fixture f(30, false);
  f.Make();
  CHECK(f.TokenNow() == "s.tok-1");
  f.http.Fail(Method::kPost, kLogin, absl::UnavailableError("vault https://v: cannot connect"));
  f.AdvanceAndSettle(20s);  // login at 2/3 TTL fails
  CHECK(f.Logins() == 2);
  CHECK(f.TokenNow() == "s.tok-1");  // still valid for 10 s
  auto s = f.src->Snapshot();
  CHECK(s.next_action == "login");
  CHECK(s.next_action_in == 500ms);
  // Past the expiry, callers get the error, never the dead token.
  f.clock.Advance(10s);
  auto t = f.src->Token(f.In(1s));
  REQUIRE_FALSE(t.ok());
  CHECK_THAT(std::string(t.status().message()), Catch::Contains("cannot connect"));
}

TEST_CASE("Stop wakes callers waiting for a login", "[auth][lifecycle]") {
  Fixture f;
  f.gated.Close(kLogin);
  f.Make();
  absl::StatusOr<std::shared_ptr<const SecretBuffer>> got = absl::UnknownError("unset");
  std::thread caller([&] { got = f.src->Token(f.In(30s)); });
  REQUIRE(f.gated.WaitBlocked(1));
  REQUIRE(f.clock.WaitForWaits(1));
  std::thread stopper([&] { f.src->Stop(); });
  caller.join();  // returns before the login finishes
  REQUIRE_FALSE(got.ok());
  CHECK(got.status().code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(got.status().message()), Catch::Contains("shutting down"));
  f.gated.Open();
  stopper.join();
  CHECK(f.src->Token(f.In(1s)).status().code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("no credential or token ever reaches an error, the snapshot or a log line",
          "[auth][lifecycle][secrets]") {
  LogCapture logs;
  TempDir dir;
  const std::string role = "ROLEID-MARK-3e1c";
  const std::string secret = "SECRETID-MARK-77aa";
  const std::string token1 = "s.TOKEN-MARK-1111";
  const std::string token2 = "s.TOKEN-MARK-2222";
  const std::string sid = dir.Write("sid", secret);
  ::chmod(sid.c_str(), 0400);
  Fixture f;
  const std::string login = "/v1/auth/approle/login";
  f.http.Respond(Method::kPost, login, 400,
                 R"({"errors":["invalid secret id )" + secret + " role " + role + R"("]})");
  f.Make(std::make_unique<AppRoleAuthenticator>("approle", dir.Write("rid", role), sid));
  std::vector<std::string> errors;
  auto t = f.src->Token(f.In(5s));
  REQUIRE_FALSE(t.ok());
  errors.emplace_back(t.status().message());
  errors.emplace_back(f.src->Token(f.In(5s)).status().message());
  errors.push_back(f.src->Snapshot().last_login_error);
  // Now a good login, a renewal, a refused renewal, a re-login, an invalidation.
  f.http.Respond(Method::kPost, login, 200, LoginJson(token1, 30, true));
  f.AdvanceAndSettle(f.src->Snapshot().backoff_remaining);
  REQUIRE(f.TokenNow() == token1);
  f.AdvanceAndSettle(20s);
  f.http.Respond(Method::kPost, kRenew, 403, R"({"errors":["permission denied for )" + token1 + R"("]})");
  f.http.Respond(Method::kPost, login, 200, LoginJson(token2, 30, true));
  f.AdvanceAndSettle(20s);
  REQUIRE(f.TokenNow() == token2);
  errors.push_back(f.src->Snapshot().last_renewal_error);
  f.clock.Advance(5s);
  f.src->Invalidate(*f.src->Token(f.In(1s)));
  f.TokenNow();
  errors.push_back(f.src->Describe());

  const std::string all = logs.all();
  CHECK(logs.events("auth.login").size() >= 3);
  CHECK(logs.events("auth.renew").size() >= 2);
  for (const std::string& marker : {role, secret, token1, token2, std::string("MARK")}) {
    INFO(marker);
    CHECK(all.find(marker) == std::string::npos);
    for (const auto& e : errors) {
      INFO(e);
      CHECK(e.find(marker) == std::string::npos);
    }
  }
  // The log lines carry what an operator needs.
  auto ok = logs.events("auth.login");
  bool saw_success = false;
  for (const auto& j : ok) {
    if (j.value("msg", "") == "logged in to Vault") {
      saw_success = true;
      CHECK(j["method"] == "approle");
      CHECK(j.contains("duration_ms"));
      CHECK(j.contains("ttl_s"));
      CHECK(j.contains("longest_wait_ms"));
    }
  }
  CHECK(saw_success);
}
