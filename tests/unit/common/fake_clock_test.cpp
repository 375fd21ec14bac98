// The FakeClock every other test relies on: its two waiting modes behave as documented.
#include "fakes/fake_clock.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace trousseau::fakes {
namespace {

using namespace std::chrono_literals;

TEST_CASE("FakeClock moves only when told to", "[fake_clock]") {
  FakeClock clock;
  const auto t0 = clock.Now();
  const auto w0 = clock.WallNow();
  CHECK(clock.Now() == t0);
  clock.Advance(1500ms);
  CHECK(clock.Now() - t0 == std::chrono::milliseconds(1500));
  CHECK(clock.WallNow() - w0 == std::chrono::milliseconds(1500));
  clock.Set(t0 + 10s);
  CHECK(clock.Now() == t0 + 10s);
}

TEST_CASE("FakeClock free-running WaitUntil advances to the deadline without sleeping",
          "[fake_clock]") {
  FakeClock clock;
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock<std::mutex> lock(mu);
  const auto t0 = clock.Now();
  const auto real0 = std::chrono::steady_clock::now();
  CHECK_FALSE(clock.WaitUntil(lock, cv, t0 + 1h, [] { return false; }));
  CHECK(std::chrono::steady_clock::now() - real0 < 5s);
  CHECK(clock.Now() == t0 + 1h);
  CHECK(lock.owns_lock());
  // A deadline in the past never moves time backwards.
  CHECK_FALSE(clock.WaitUntil(lock, cv, t0, [] { return false; }));
  CHECK(clock.Now() == t0 + 1h);
  CHECK(clock.waits() == 2);
}

TEST_CASE("FakeClock WaitUntil returns true without advancing when the predicate holds",
          "[fake_clock]") {
  FakeClock clock;
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock<std::mutex> lock(mu);
  const auto t0 = clock.Now();
  CHECK(clock.WaitUntil(lock, cv, t0 + 1h, [] { return true; }));
  CHECK(clock.Now() == t0);
}

TEST_CASE("FakeClock blocking WaitUntil wakes on Advance past the deadline or on notify",
          "[fake_clock]") {
  FakeClock clock;
  clock.set_blocking(true);
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  int timeouts = 0;
  bool stopped = false;
  std::thread waiter([&] {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      if (clock.WaitUntil(lock, cv, clock.Now() + 10s, [&] { return stop; })) {
        stopped = true;
        return;
      }
      ++timeouts;
    }
  });
  REQUIRE(clock.WaitForWaits(1));
  clock.Advance(5s);  // not yet
  clock.Advance(5s);  // now the first wait ends and the loop waits again
  REQUIRE(clock.WaitForWaits(2));
  {
    std::lock_guard<std::mutex> g(mu);
    CHECK(timeouts == 1);
    stop = true;
  }
  cv.notify_all();
  waiter.join();
  CHECK(stopped);
  CHECK(timeouts == 1);
}

}  // namespace
}  // namespace trousseau::fakes
