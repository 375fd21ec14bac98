// TransitBatcher over a real TransitClient and a FakeTransitServer that computes its answers:
// batch assembly (a lone caller goes alone; callers behind a call in flight share one
// batch_input call), per-item error mapping, key-version grouping, the batch deadline, and
// members retrying alone when the whole call failed under an earlier member's deadline.
#include <catch2/catch.hpp>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "envelope/batcher.h"
#include "envelope/key_service.h"
#include "fakes/fake_token_source.h"
#include "fakes/fake_transit_server.h"

namespace trousseau::envelope {
namespace {

using namespace std::chrono_literals;
using fakes::FakeTokenSource;
using fakes::FakeTransitServer;
using Catch::Contains;

const std::string kEncrypt = "/v1/transit/encrypt/kubernetes";
const std::string kDecrypt = "/v1/transit/decrypt/kubernetes";

struct Fixture {
  explicit Fixture(size_t max_items = 3, std::chrono::microseconds wait = 10s)
      : batcher(transit, SystemClock(), BatchOptions{max_items, wait}) {}
  FakeTransitServer vault;
  FakeTokenSource tokens;
  vault::TransitClient transit{vault, tokens, "transit", "kubernetes"};
  TransitBatcher batcher;
  static Deadline In(std::chrono::milliseconds d) { return SystemClock().Now() + d; }

  // Starts one Encrypt that parks at Vault, so that later callers find a call in flight.
  std::future<absl::StatusOr<vault::Wrapped>> Blocker() {
    vault.Hold(1);
    auto f = std::async(std::launch::async,
                        [this] { return batcher.Encrypt("blocker", 0, "", In(20s)); });
    REQUIRE(vault.WaitForHeld(1));
    return f;
  }
};

std::string Seed(int i) { return "seed-" + std::to_string(i) + std::string(26, 'x'); }

TEST_CASE("a lone caller is sent at once with the plain call", "[batcher]") {
  Fixture f(32, 10s);  // a 10 s wait would time the test out if a lone caller waited
  auto w = f.batcher.Encrypt(Seed(1), 0, "", Fixture::In(5s));
  REQUIRE(w.ok());
  CHECK(w->ciphertext == FakeTransitServer::Ct(1, Seed(1)));
  auto u = f.batcher.Decrypt(w->ciphertext, "", Fixture::In(5s));
  REQUIRE(u.ok());
  CHECK(u->plaintext.view() == Seed(1));
  const auto reqs = f.vault.requests();
  REQUIRE(reqs.size() == 2);
  CHECK_FALSE(reqs[0].batch);
  CHECK_FALSE(reqs[1].batch);
}

TEST_CASE("callers behind a call in flight share one batch and each gets its own answer",
          "[batcher]") {
  Fixture f(3);
  auto blocker = f.Blocker();
  std::vector<std::future<absl::StatusOr<vault::Wrapped>>> calls;
  for (int i = 0; i < 3; ++i) {
    calls.push_back(std::async(std::launch::async,
                               [&f, i] { return f.batcher.Encrypt(Seed(i), 0, "", Fixture::In(20s)); }));
  }
  // The third fills the batch (max_items 3): it goes without waiting out the 10 s.
  for (int i = 0; i < 3; ++i) {
    auto w = calls[i].get();
    REQUIRE(w.ok());
    CHECK(w->ciphertext == FakeTransitServer::Ct(1, Seed(i)));  // its own, not a neighbour's
    CHECK(w->request_id == "req-batch");
  }
  f.vault.Release();
  REQUIRE(blocker.get().ok());
  const auto reqs = f.vault.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[1].batch);
  CHECK(reqs[1].items == 3);
  CHECK(reqs[1].path == kEncrypt);
  CHECK_THAT(reqs[1].body, Contains("\"reference\":\"0\""));
}

TEST_CASE("a batch waits at most max_wait for company", "[batcher]") {
  Fixture f(32, 2ms);
  auto blocker = f.Blocker();
  // Two callers, far from the 32 that would fill the batch: sent when the wait ends.
  auto a = std::async(std::launch::async, [&] { return f.batcher.Decrypt(FakeTransitServer::Ct(1, "a"), "", Fixture::In(20s)); });
  auto b = std::async(std::launch::async, [&] { return f.batcher.Decrypt(FakeTransitServer::Ct(1, "b"), "", Fixture::In(20s)); });
  auto ra = a.get();
  auto rb = b.get();
  REQUIRE(ra.ok());
  REQUIRE(rb.ok());
  CHECK(ra->plaintext.view() == "a");
  CHECK(rb->plaintext.view() == "b");
  f.vault.Release();
  REQUIRE(blocker.get().ok());
  // Both in one batch, or (on a slow machine, the second arriving after the wait) two calls:
  // never a lost or swapped answer. Every request after the blocker is a decrypt.
  const auto reqs = f.vault.requests();
  size_t items = 0;
  for (size_t i = 1; i < reqs.size(); ++i) {
    CHECK(reqs[i].path == kDecrypt);
    items += reqs[i].items;
  }
  CHECK(items == 2);
}

TEST_CASE("each item's error goes to its own caller with its own code", "[batcher]") {
  Fixture f(3);
  f.vault.min_decryption_version = 2;
  auto blocker = f.Blocker();
  auto good = std::async(std::launch::async, [&] { return f.batcher.Decrypt(FakeTransitServer::Ct(2, "good"), "", Fixture::In(20s)); });
  auto bad = std::async(std::launch::async, [&] { return f.batcher.Decrypt("vault:v2:bad", "", Fixture::In(20s)); });
  auto old = std::async(std::launch::async, [&] { return f.batcher.Decrypt(FakeTransitServer::Ct(1, "old"), "", Fixture::In(20s)); });
  auto rg = good.get();
  auto rb = bad.get();
  auto ro = old.get();
  REQUIRE(rg.ok());
  CHECK(rg->plaintext.view() == "good");
  CHECK(rb.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(rb.status().message()), Contains("Vault rejected the ciphertext"));
  CHECK_THAT(std::string(rb.status().message()), Contains("no prefix"));
  CHECK(ro.status().code() == absl::StatusCode::kFailedPrecondition);
  f.vault.Release();
  REQUIRE(blocker.get().ok());
  const auto reqs = f.vault.requests();
  REQUIRE(reqs.size() == 2);  // one batch (answered 400 with per-item results), no retries
  CHECK(reqs[1].items == 3);
}

TEST_CASE("encrypts are grouped by key version and every item carries its version", "[batcher]") {
  Fixture f(2);
  f.vault.latest_version = 3;
  auto blocker = f.Blocker();
  std::vector<std::future<absl::StatusOr<vault::Wrapped>>> calls;
  for (int i = 0; i < 4; ++i) {
    const int64_t v = i < 2 ? 2 : 3;
    calls.push_back(std::async(std::launch::async,
                               [&f, i, v] { return f.batcher.Encrypt(Seed(i), v, "", Fixture::In(20s)); }));
  }
  for (int i = 0; i < 4; ++i) {
    auto w = calls[i].get();
    REQUIRE(w.ok());
    CHECK(w->version == (i < 2 ? 2 : 3));
    CHECK(w->ciphertext == FakeTransitServer::Ct(i < 2 ? 2 : 3, Seed(i)));
  }
  f.vault.Release();
  REQUIRE(blocker.get().ok());
  const auto reqs = f.vault.requests();
  REQUIRE(reqs.size() == 3);
  for (size_t i = 1; i < 3; ++i) {
    CHECK(reqs[i].batch);
    REQUIRE(reqs[i].items == 2);
    CHECK(reqs[i].key_versions[0] == reqs[i].key_versions[1]);  // never mixed in one call
  }
  CHECK(reqs[1].key_versions[0] != reqs[2].key_versions[0]);
}

TEST_CASE("a result's version is read from its own ciphertext, as for a single call",
          "[batcher]") {
  Fixture f(2);
  f.vault.latest_version = 4;
  f.vault.ignore_key_version = true;
  auto blocker = f.Blocker();
  auto a = std::async(std::launch::async, [&] { return f.batcher.Encrypt(Seed(1), 3, "", Fixture::In(20s)); });
  auto b = std::async(std::launch::async, [&] { return f.batcher.Encrypt(Seed(2), 3, "", Fixture::In(20s)); });
  auto ra = a.get();
  auto rb = b.get();
  REQUIRE(ra.ok());
  REQUIRE(rb.ok());
  CHECK(ra->version == 4);  // what Vault used, never the version asked for
  CHECK(ra->ciphertext == FakeTransitServer::Ct(4, Seed(1)));
  CHECK(rb->version == 4);
  const auto reqs = f.vault.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[1].key_versions == std::vector<int64_t>{3, 3});
  f.vault.Release();
  REQUIRE(blocker.get().ok());
}

TEST_CASE("a batch runs under its earliest member's deadline; late members retry alone",
          "[batcher]") {
  Fixture f(3);
  auto blocker = f.Blocker();
  // The batch call fails as if its (earliest) deadline ran out.
  f.vault.FailNext(1, absl::DeadlineExceededError("vault: timed out"), 0, "/decrypt/", true);
  const Deadline early = Fixture::In(15s);
  const Deadline late = Fixture::In(25s);
  auto a = std::async(std::launch::async, [&] { return f.batcher.Decrypt(FakeTransitServer::Ct(1, "a"), "", early); });
  auto b = std::async(std::launch::async, [&] { return f.batcher.Decrypt(FakeTransitServer::Ct(1, "b"), "", late); });
  auto c = std::async(std::launch::async, [&] { return f.batcher.Decrypt(FakeTransitServer::Ct(1, "c"), "", late); });
  auto ra = a.get();
  auto rb = b.get();
  auto rc = c.get();
  CHECK(ra.status().code() == absl::StatusCode::kDeadlineExceeded);  // its own deadline
  REQUIRE(rb.ok());
  REQUIRE(rc.ok());
  CHECK(rb->plaintext.view() == "b");
  CHECK(rc->plaintext.view() == "c");
  f.vault.Release();
  REQUIRE(blocker.get().ok());
  const auto reqs = f.vault.requests();
  REQUIRE(reqs.size() == 4);  // blocker, the failed batch, b and c alone
  CHECK(reqs[1].batch);
  CHECK(reqs[1].deadline == early);
  CHECK_FALSE(reqs[2].batch);
  CHECK_FALSE(reqs[3].batch);
  CHECK(reqs[2].deadline == late);
}

TEST_CASE("a batch refused as a whole is retried item by item", "[batcher]") {
  Fixture f(2);
  auto blocker = f.Blocker();
  f.vault.FailNext(1, absl::OkStatus(), 400, "/encrypt/", true,
                   R"({"errors":["refused JSON input due to high complexity"]})");
  auto a = std::async(std::launch::async, [&] { return f.batcher.Encrypt(Seed(1), 0, "", Fixture::In(20s)); });
  auto b = std::async(std::launch::async, [&] { return f.batcher.Encrypt(Seed(2), 0, "", Fixture::In(20s)); });
  auto ra = a.get();
  auto rb = b.get();
  REQUIRE(ra.ok());
  REQUIRE(rb.ok());
  CHECK(ra->ciphertext == FakeTransitServer::Ct(1, Seed(1)));
  CHECK(rb->ciphertext == FakeTransitServer::Ct(1, Seed(2)));
  f.vault.Release();
  REQUIRE(blocker.get().ok());
  CHECK(f.vault.count() == 4);
}

TEST_CASE("a permission error fans out to every member without retries", "[batcher]") {
  Fixture f(2);
  auto blocker = f.Blocker();
  f.vault.FailNext(2, absl::OkStatus(), 403, "/encrypt/", true, R"({"errors":["permission denied"]})");
  auto a = std::async(std::launch::async, [&] { return f.batcher.Encrypt(Seed(1), 0, "", Fixture::In(20s)); });
  auto b = std::async(std::launch::async, [&] { return f.batcher.Encrypt(Seed(2), 0, "", Fixture::In(20s)); });
  CHECK(a.get().status().code() == absl::StatusCode::kPermissionDenied);
  CHECK(b.get().status().code() == absl::StatusCode::kPermissionDenied);
  f.vault.Release();
  REQUIRE(blocker.get().ok());
  CHECK(f.vault.count() == 3);  // blocker, the batch, its one retry with a fresh token
}

TEST_CASE("a member whose deadline already passed is answered without Vault", "[batcher]") {
  Fixture f;
  auto r = f.batcher.Encrypt(Seed(1), 0, "", SystemClock().Now() - 1ms);
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(f.vault.count() == 0);
}

TEST_CASE("associated_data travels per item, base64-encoded", "[batcher]") {
  Fixture f(2);
  auto blocker = f.Blocker();
  auto a = std::async(std::launch::async, [&] { return f.batcher.Encrypt(Seed(1), 0, "ctx-1", Fixture::In(20s)); });
  auto b = std::async(std::launch::async, [&] { return f.batcher.Encrypt(Seed(2), 0, "", Fixture::In(20s)); });
  REQUIRE(a.get().ok());
  REQUIRE(b.get().ok());
  f.vault.Release();
  REQUIRE(blocker.get().ok());
  const auto reqs = f.vault.requests();
  REQUIRE(reqs.size() == 2);
  REQUIRE(reqs[1].items == 2);
  std::vector<std::string> ad = reqs[1].associated;
  std::sort(ad.begin(), ad.end());
  CHECK(ad[0].empty());
  CHECK(ad[1] == base64::Encode("ctx-1"));
  // Alone, an item with associated_data is the plain call, which carries the field too.
  REQUIRE(f.batcher.Decrypt(FakeTransitServer::Ct(1, "z"), "ctx-2", Fixture::In(5s)).ok());
  const auto last = f.vault.requests().back();
  CHECK_FALSE(last.batch);
  CHECK(last.associated[0] == base64::Encode("ctx-2"));
}

TEST_CASE("TransitKeyService with batch_max_items 1 makes one plain call per request",
          "[batcher][key_service]") {
  FakeTransitServer vault;
  FakeTokenSource tokens;
  vault::TransitClient transit{vault, tokens, "transit", "kubernetes"};
  TransitKeyServiceOptions o;
  o.batch_max_items = 1;
  o.coalesce_decrypts = false;
  TransitKeyService keys(transit, SystemClock(), o);
  vault.Hold(1);
  auto first = std::async(std::launch::async, [&] { return keys.Encrypt(Seed(0), SystemClock().Now() + 20s); });
  REQUIRE(vault.WaitForHeld(1));
  std::vector<std::future<absl::StatusOr<EncryptResult>>> calls;
  for (int i = 1; i < 4; ++i) {
    calls.push_back(std::async(std::launch::async, [&keys, i] { return keys.Encrypt(Seed(i), SystemClock().Now() + 20s); }));
  }
  for (auto& c : calls) REQUIRE(c.get().ok());
  vault.Release();
  REQUIRE(first.get().ok());
  for (const auto& r : vault.requests()) CHECK_FALSE(r.batch);
  CHECK(vault.count() == 4);
}

}  // namespace
}  // namespace trousseau::envelope
