// DecryptCoalescer: N identical Decrypts in flight make one call, each caller gets its own
// copy, errors fan out, a waiter's deadline is its own, and nothing is kept afterwards.
// Waiters park in FakeClock::WaitUntil (blocking mode), so the tests know when they have joined.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "envelope/coalescer.h"
#include "envelope/key_service.h"
#include "fakes/fake_clock.h"
#include "fakes/fake_token_source.h"
#include "fakes/fake_transit_server.h"

namespace trousseau::envelope {
namespace {

using namespace std::chrono_literals;
using fakes::FakeClock;
using fakes::FakeTokenSource;
using fakes::FakeTransitServer;

// A call that parks until released, counting how often it ran.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int entered = 0;
  std::atomic<int> calls{0};
  void Release() {
    std::lock_guard<std::mutex> g(mu);
    open = true;
    cv.notify_all();
  }
  bool WaitEntered(int n) {
    std::unique_lock<std::mutex> g(mu);
    return cv.wait_for(g, 20s, [&] { return entered >= n; });
  }
  DecryptCoalescer::Call Returning(absl::StatusOr<std::string> answer) {
    return [this, answer](Deadline) -> absl::StatusOr<vault::Unwrapped> {
      ++calls;
      std::unique_lock<std::mutex> g(mu);
      ++entered;
      cv.notify_all();
      cv.wait(g, [&] { return open; });
      if (!answer.ok()) return answer.status();
      vault::Unwrapped u;
      u.plaintext = SecretBuffer::CopyOf(*answer);
      u.node = "https://vault-a.test:8200";
      u.request_id = "req-1";
      return u;
    };
  }
};

struct Fixture {
  Fixture() { clock.set_blocking(true); }
  FakeClock clock;
  DecryptCoalescer c{clock};
  Deadline In(std::chrono::seconds s) const { return clock.Now() + s; }
};

TEST_CASE("N identical decrypts in flight make one call; each gets its own copy", "[coalescer]") {
  Fixture f;
  Gate gate;
  const std::string key = DecryptKey("vault:v1:abc", "kid", {}, "");
  auto leader = std::async(std::launch::async, [&] { return f.c.Do(key, f.In(10s), gate.Returning("seed")); });
  REQUIRE(gate.WaitEntered(1));
  std::vector<std::future<absl::StatusOr<vault::Unwrapped>>> waiters;
  for (int i = 0; i < 9; ++i) {
    waiters.push_back(std::async(std::launch::async, [&] { return f.c.Do(key, f.In(10s), gate.Returning("seed")); }));
  }
  REQUIRE(f.clock.WaitForWaits(9));  // all nine are parked on the flight
  gate.Release();
  std::set<const void*> buffers;
  auto r = leader.get();
  REQUIRE(r.ok());
  CHECK(r->plaintext.view() == "seed");
  buffers.insert(r->plaintext.data());
  std::vector<vault::Unwrapped> kept;  // keep them alive so addresses cannot be reused
  kept.push_back(std::move(*r));
  for (auto& w : waiters) {
    auto got = w.get();
    REQUIRE(got.ok());
    CHECK(got->plaintext.view() == "seed");
    CHECK(got->request_id == "req-1");
    buffers.insert(got->plaintext.data());
    kept.push_back(std::move(*got));
  }
  CHECK(gate.calls == 1);
  CHECK(buffers.size() == 10);  // ten distinct buffers: nobody shares one
  CHECK(f.c.InFlight() == 0);
}

TEST_CASE("nothing is cached: the same decrypt after the call completes calls again",
          "[coalescer]") {
  Fixture f;
  Gate gate;
  gate.Release();
  const std::string key = DecryptKey("vault:v1:abc", "kid", {}, "");
  REQUIRE(f.c.Do(key, f.In(10s), gate.Returning("seed")).ok());
  REQUIRE(f.c.Do(key, f.In(10s), gate.Returning("seed")).ok());
  CHECK(gate.calls == 2);
  CHECK(f.c.InFlight() == 0);
}

TEST_CASE("an error answer fans out to every waiter", "[coalescer]") {
  Fixture f;
  Gate gate;
  const std::string key = DecryptKey("vault:v1:abc", "", {}, "");
  auto call = gate.Returning(absl::InvalidArgumentError("Vault rejected the ciphertext"));
  auto leader = std::async(std::launch::async, [&] { return f.c.Do(key, f.In(10s), call); });
  REQUIRE(gate.WaitEntered(1));
  auto w1 = std::async(std::launch::async, [&] { return f.c.Do(key, f.In(20s), call); });
  auto w2 = std::async(std::launch::async, [&] { return f.c.Do(key, f.In(20s), call); });
  REQUIRE(f.clock.WaitForWaits(2));
  gate.Release();
  CHECK(leader.get().status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(w1.get().status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(w2.get().status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(gate.calls == 1);  // a definite answer is not retried, even by waiters with more time
}

TEST_CASE("a waiter with more time does not inherit the leader's deadline failure",
          "[coalescer]") {
  Fixture f;
  Gate gate;
  const std::string key = DecryptKey("vault:v1:abc", "", {}, "");
  // The first call times out (the leader's short deadline); a second one succeeds.
  std::atomic<int> n{0};
  auto first = gate.Returning(absl::DeadlineExceededError("vault: timed out after 1000 ms"));
  auto second = gate.Returning("seed");
  DecryptCoalescer::Call call = [&](Deadline d) { return n++ == 0 ? first(d) : second(d); };
  auto leader = std::async(std::launch::async, [&] { return f.c.Do(key, f.In(1s), call); });
  REQUIRE(gate.WaitEntered(1));
  auto same = std::async(std::launch::async, [&] { return f.c.Do(key, f.In(1s), call); });
  auto later = std::async(std::launch::async, [&] { return f.c.Do(key, f.In(30s), call); });
  REQUIRE(f.clock.WaitForWaits(2));
  gate.Release();
  CHECK(leader.get().status().code() == absl::StatusCode::kDeadlineExceeded);
  // A waiter with the leader's own deadline has no more time: the failure is its answer too.
  CHECK(same.get().status().code() == absl::StatusCode::kDeadlineExceeded);
  auto r = later.get();
  REQUIRE(r.ok());
  CHECK(r->plaintext.view() == "seed");
  CHECK(gate.calls == 2);
}

TEST_CASE("a waiter stops waiting at its own deadline", "[coalescer]") {
  Fixture f;
  Gate gate;
  const std::string key = DecryptKey("vault:v1:abc", "", {}, "");
  auto leader = std::async(std::launch::async, [&] { return f.c.Do(key, f.In(60s), gate.Returning("seed")); });
  REQUIRE(gate.WaitEntered(1));
  auto impatient = std::async(std::launch::async, [&] { return f.c.Do(key, f.In(2s), gate.Returning("seed")); });
  REQUIRE(f.clock.WaitForWaits(1));
  f.clock.Advance(3s);
  auto r = impatient.get();
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  gate.Release();
  REQUIRE(leader.get().ok());
  CHECK(f.c.InFlight() == 0);
}

TEST_CASE("the key holds every field that can change the answer", "[coalescer]") {
  const std::string base = DecryptKey("vault:v1:abc", "kid", {{"a.example.com", "1"}}, "");
  CHECK(base == DecryptKey("vault:v1:abc", "kid", {{"a.example.com", "1"}}, ""));
  CHECK(base != DecryptKey("vault:v1:abd", "kid", {{"a.example.com", "1"}}, ""));
  CHECK(base != DecryptKey("vault:v1:abc", "kid2", {{"a.example.com", "1"}}, ""));
  CHECK(base != DecryptKey("vault:v1:abc", "kid", {{"a.example.com", "2"}}, ""));
  CHECK(base != DecryptKey("vault:v1:abc", "kid", {}, ""));
  CHECK(base != DecryptKey("vault:v1:abc", "kid", {{"a.example.com", "1"}}, "ad"));
  // Length prefixes: moving bytes between fields never gives the same key.
  CHECK(DecryptKey("ab", "c", {}, "") != DecryptKey("a", "bc", {}, ""));
}

TEST_CASE("TransitKeyService: ten identical decrypts make one Vault call",
          "[coalescer][key_service]") {
  FakeTransitServer vault;
  FakeTokenSource tokens;
  vault::TransitClient transit{vault, tokens, "transit", "kubernetes"};
  FakeClock clock;
  clock.set_blocking(true);
  TransitKeyServiceOptions o;
  o.batch_max_items = 1;
  TransitKeyService keys(transit, clock, o);
  const std::string ct = FakeTransitServer::Ct(1, "the-seed");
  vault.Hold(1);
  std::vector<std::future<absl::StatusOr<DecryptResult>>> calls;
  calls.push_back(std::async(std::launch::async, [&] { return keys.Decrypt(ct, "transit/kubernetes:v1", {}, clock.Now() + 10s); }));
  REQUIRE(vault.WaitForHeld(1));
  for (int i = 0; i < 9; ++i) {
    calls.push_back(std::async(std::launch::async, [&] { return keys.Decrypt(ct, "transit/kubernetes:v1", {}, clock.Now() + 10s); }));
  }
  REQUIRE(clock.WaitForWaits(9));
  vault.Release();
  for (auto& c : calls) {
    auto r = c.get();
    REQUIRE(r.ok());
    CHECK(r->plaintext.view() == "the-seed");
  }
  CHECK(vault.count() == 1);
  // A different key_id is a different question: its own call.
  REQUIRE(keys.Decrypt(ct, "other", {}, clock.Now() + 10s).ok());
  CHECK(vault.count() == 2);
}

}  // namespace
}  // namespace trousseau::envelope
