// TokenFileRenewer: a token from a file is looked up, renewed at ~2/3 of its TTL, re-learned
// when the file's token changes, and left alone when it cannot or need not be renewed.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "auth_test_util.h"
#include "fakes/fake_clock.h"
#include "fakes/fake_token_source.h"
#include "fakes/log_capture.h"
#include "vault/auth/token_file_renewer.h"

using namespace std::chrono_literals;
using namespace trousseau;
using namespace trousseau::vault::auth;
using namespace trousseau::authtest;
using trousseau::fakes::FakeClock;
using trousseau::fakes::FakeTokenSource;
using trousseau::fakes::LogCapture;

namespace {
const std::string kLookup = "/v1/auth/token/lookup-self";
const std::string kRenew = "/v1/auth/token/renew-self";

RenewerOptions NoJitter() {
  RenewerOptions o;
  o.random = [] { return 0.0; };  // renew exactly at 2/3 of the TTL
  return o;
}
}  // namespace

TEST_CASE("a renewable token is renewed at two thirds of its TTL, with the TTL as increment",
          "[auth][renewer]") {
  LogCapture logs;
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens("s.file-token");
  http.Respond(Method::kGet, kLookup, 200, LookupJson(90, true));
  http.Respond(Method::kPost, kRenew, 200, RenewJson(90, true));
  TokenFileRenewer r(tokens, http, clock, NoJitter());

  const SteadyTime t0 = clock.Now();
  SteadyTime next = r.Step();
  CHECK(http.count(Method::kGet, kLookup) == 1);
  CHECK(http.count(Method::kPost, kRenew) == 0);
  CHECK(next == t0 + 30s);  // the poll period (30 s) comes before 60 s
  CHECK(r.Snapshot().known);
  CHECK(r.Snapshot().ttl == 90s);

  clock.Advance(30s);
  next = r.Step();
  CHECK(http.count(Method::kPost, kRenew) == 0);  // not due yet
  CHECK(next == t0 + 60s);

  clock.Advance(30s);
  r.Step();
  REQUIRE(http.count(Method::kPost, kRenew) == 1);
  CHECK(http.last().token == "s.file-token");
  CHECK(nlohmann::json::parse(http.last().body) == nlohmann::json({{"increment", 90}}));
  CHECK(r.Snapshot().renewals == 1);
  CHECK(http.count(Method::kGet, kLookup) == 1);  // the same token is not looked up again
}

TEST_CASE("jitter renews up to 10% earlier, never later", "[auth][renewer]") {
  LogCapture logs;
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens;
  http.Respond(Method::kGet, kLookup, 200, LookupJson(300, true));
  RenewerOptions o;
  o.poll = 1h;
  o.random = [] { return 0.999; };
  TokenFileRenewer r(tokens, http, clock, o);
  const SteadyTime t0 = clock.Now();
  const SteadyTime next = r.Step();
  CHECK(next >= t0 + 179s);  // 300 * 2/3 * (1 - 0.1 * 0.999) ~ 180 s
  CHECK(next <= t0 + 200s);
}

TEST_CASE("a new token in the file is looked up and renewed on its own schedule",
          "[auth][renewer]") {
  LogCapture logs;
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens("s.first");
  http.Respond(Method::kGet, kLookup, 200, LookupJson(90, true));
  TokenFileRenewer r(tokens, http, clock, NoJitter());
  r.Step();
  tokens.Rotate("s.second");
  http.Respond(Method::kGet, kLookup, 200, LookupJson(12, true));
  const SteadyTime t1 = clock.Now();
  const SteadyTime next = r.Step();
  CHECK(http.count(Method::kGet, kLookup) == 2);
  CHECK(http.last().token == "s.second");
  CHECK(next == t1 + 8s);
}

TEST_CASE("tokens that do not expire or are not renewable are never renewed", "[auth][renewer]") {
  LogCapture logs;
  for (auto [ttl, renewable] : {std::pair{0L, true}, std::pair{60L, false}}) {
    FakeClock clock;
    FakeHttpTransport http;
    FakeTokenSource tokens;
    http.Respond(Method::kGet, kLookup, 200, LookupJson(ttl, renewable));
    TokenFileRenewer r(tokens, http, clock, NoJitter());
    for (int i = 0; i < 5; ++i) {
      r.Step();
      clock.Advance(1min);
    }
    CHECK(http.count(Method::kPost, kRenew) == 0);
    CHECK(http.count(Method::kGet, kLookup) == 1);
  }
}

TEST_CASE("a shorter grant than asked warns that the token nears its max TTL", "[auth][renewer]") {
  LogCapture logs;
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens;
  http.Respond(Method::kGet, kLookup, 200, LookupJson(60, true));
  http.Respond(Method::kPost, kRenew, 200, RenewJson(20, true));
  TokenFileRenewer r(tokens, http, clock, NoJitter());
  r.Step();
  clock.Advance(40s);
  const SteadyTime t = clock.Now();
  const SteadyTime next = r.Step();
  CHECK(r.Snapshot().ttl == 20s);
  CHECK(next == t + std::chrono::duration_cast<SteadyTime::duration>(std::chrono::duration<double>(20.0 * 2 / 3)));
  bool warned = false;
  for (const auto& e : logs.events("auth.renew")) {
    warned = warned || e["msg"].get<std::string>().find("max TTL") != std::string::npos;
  }
  CHECK(warned);
}

TEST_CASE("a failed renewal is retried after the retry period, and never logs the token",
          "[auth][renewer]") {
  LogCapture logs;
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens("s.secret-marker-7f3a");
  http.Respond(Method::kGet, kLookup, 200, LookupJson(30, true));
  http.Respond(Method::kPost, kRenew, 503, R"({"errors":["Vault is sealed"]})");
  TokenFileRenewer r(tokens, http, clock, NoJitter());
  r.Step();
  clock.Advance(20s);
  const SteadyTime t = clock.Now();
  const SteadyTime next = r.Step();
  CHECK(r.Snapshot().renewal_failures == 1);
  CHECK(next == t + 10s);
  http.Respond(Method::kPost, kRenew, 200, RenewJson(30, true));
  clock.Advance(10s);
  r.Step();
  CHECK(r.Snapshot().renewals == 1);
  CHECK(logs.all().find("secret-marker-7f3a") == std::string::npos);
}

TEST_CASE("a token Vault refuses at lookup is not renewed and the error is kept",
          "[auth][renewer]") {
  LogCapture logs;
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens;
  http.Respond(Method::kGet, kLookup, 403, R"({"errors":["permission denied"]})");
  TokenFileRenewer r(tokens, http, clock, NoJitter());
  r.Step();
  clock.Advance(10min);
  r.Step();
  CHECK(http.count(Method::kPost, kRenew) == 0);
  CHECK_FALSE(r.Snapshot().known);
  CHECK_FALSE(r.Snapshot().last_error.empty());
}

TEST_CASE("Start and Stop run the loop on the clock and stop promptly", "[auth][renewer]") {
  LogCapture logs;  // the loop renews many times in virtual time
  FakeClock clock;  // free-running: WaitUntil returns at once in virtual time
  FakeHttpTransport http;
  FakeTokenSource tokens;
  http.Respond(Method::kGet, kLookup, 200, LookupJson(30, true));
  http.Respond(Method::kPost, kRenew, 200, RenewJson(30, true));
  TokenFileRenewer r(tokens, http, clock, NoJitter());
  r.Start();
  // The thread spins through virtual time; the real-time bound only guards a broken loop.
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  while (r.Snapshot().renewals < 3 && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(1ms);
  }
  r.Stop();
  CHECK(r.Snapshot().renewals >= 3);
}

TEST_CASE("the renewal asks for the token's creation TTL, not what is left of it",
          "[auth][renewer]") {
  LogCapture logs;
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens("s.file-token");
  // a 3600 s token first seen with 90 s left: before the fix every renewal asked for 90 s
  http.Respond(Method::kGet, kLookup, 200,
               R"({"data":{"ttl":90,"creation_ttl":3600,"renewable":true,)"
               R"("expire_time":"2026-12-02T01:00:00Z"}})");
  http.Respond(Method::kPost, kRenew, 200, RenewJson(3600, true));
  TokenFileRenewer r(tokens, http, clock, NoJitter());
  r.Step();
  clock.Advance(60s);
  r.Step();
  REQUIRE(http.count(Method::kPost, kRenew) == 1);
  CHECK(nlohmann::json::parse(http.last().body) == nlohmann::json({{"increment", 3600}}));
  CHECK(r.Snapshot().ttl == 3600s);
}

TEST_CASE("ttl 0 with an expire_time is a token in its last second: renewed at once",
          "[auth][renewer]") {
  LogCapture logs;
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens("s.file-token");
  http.Respond(Method::kGet, kLookup, 200,
               R"({"data":{"ttl":0,"creation_ttl":6,"renewable":true,)"
               R"("expire_time":"2026-12-02T01:00:00Z"}})");
  http.Respond(Method::kPost, kRenew, 200, RenewJson(6, true));
  TokenFileRenewer r(tokens, http, clock, NoJitter());
  r.Step();   // learns the token: due now
  r.Step();
  REQUIRE(http.count(Method::kPost, kRenew) == 1);
  CHECK(nlohmann::json::parse(http.last().body) == nlohmann::json({{"increment", 6}}));
  for (const auto& e : logs.events("auth.renew")) {
    CHECK(e["msg"].get<std::string>().find("does not expire") == std::string::npos);
  }
}

TEST_CASE("ttl 0 without an expire_time still does not expire", "[auth][renewer]") {
  LogCapture logs;
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens("s.file-token");
  http.Respond(Method::kGet, kLookup, 200,
               R"({"data":{"ttl":0,"creation_ttl":0,"renewable":true,"expire_time":null}})");
  TokenFileRenewer r(tokens, http, clock, NoJitter());
  for (int i = 0; i < 3; ++i) {
    r.Step();
    clock.Advance(1min);
  }
  CHECK(http.count(Method::kPost, kRenew) == 0);
}

TEST_CASE("a slow renew-self does not block Snapshot (metrics scrapes, /readyz)",
          "[auth][renewer]") {
  FakeClock clock;
  FakeHttpTransport http;
  FakeTokenSource tokens("s.file-token");
  http.Respond(Method::kGet, kLookup, 200, LookupJson(90, true));
  http.Respond(Method::kPost, kRenew, 200, RenewJson(90, true));
  GatedTransport gated(http);  // auth_test_util.h: holds renew-self until Open()
  gated.Close(kRenew);
  TokenFileRenewer r(tokens, gated, clock, NoJitter());
  r.Step();  // lookup-self (not gated)
  REQUIRE(r.Snapshot().known);
  clock.Advance(60s);
  std::thread stepper([&] { r.Step(); });  // renew-self: held in the transport
  REQUIRE(gated.WaitBlocked(1));
  // Another caller while the request is in flight: answers at once with the last snapshot.
  auto snap = std::async(std::launch::async, [&] { return r.Snapshot(); });
  const bool answered = snap.wait_for(5s) == std::future_status::ready;
  gated.Open();
  stepper.join();
  REQUIRE(answered);
  CHECK(snap.get().renewals == 0);   // the renewal had not finished
  CHECK(r.Snapshot().renewals == 1);  // and is counted once it has
}
