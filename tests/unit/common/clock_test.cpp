// The real clock and the status macros: small, but everything else leans on them.
#include "common/clock.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "common/status.h"

namespace trousseau {
namespace {

TEST_CASE("SystemClock is one shared RealClock and is monotonic", "[clock]") {
  Clock& a = SystemClock();
  Clock& b = SystemClock();
  CHECK(&a == &b);
  const auto t1 = a.Now();
  const auto t2 = a.Now();
  CHECK(t2 >= t1);
  const auto wall = a.WallNow();
  CHECK(wall > std::chrono::system_clock::time_point{});
}

TEST_CASE("RealClock::WaitUntil returns true at once when the predicate already holds",
          "[clock]") {
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock<std::mutex> lock(mu);
  // A deadline far away: returning at all proves it did not wait for it.
  const auto until = SystemClock().Now() + std::chrono::hours(1);
  CHECK(SystemClock().WaitUntil(lock, cv, until, [] { return true; }));
}

TEST_CASE("RealClock::WaitUntil returns false for a deadline already passed", "[clock]") {
  std::mutex mu;
  std::condition_variable cv;
  std::unique_lock<std::mutex> lock(mu);
  const auto until = SystemClock().Now() - std::chrono::seconds(1);
  CHECK_FALSE(SystemClock().WaitUntil(lock, cv, until, [] { return false; }));
  CHECK(lock.owns_lock());
}

absl::Status PassThrough(absl::Status st, bool* reached_end) {
  RETURN_IF_ERROR(st);
  *reached_end = true;
  return absl::OkStatus();
}

absl::StatusOr<int> Twice(absl::StatusOr<int> in) {
  ASSIGN_OR_RETURN(int v, in);
  return 2 * v;
}

TEST_CASE("RETURN_IF_ERROR and ASSIGN_OR_RETURN propagate errors unchanged", "[status]") {
  bool reached = false;
  CHECK(PassThrough(absl::OkStatus(), &reached).ok());
  CHECK(reached);
  reached = false;
  auto st = PassThrough(absl::UnavailableError("down"), &reached);
  CHECK_FALSE(reached);
  CHECK(st.code() == absl::StatusCode::kUnavailable);
  CHECK(st.message() == "down");

  auto ok = Twice(21);
  REQUIRE(ok.ok());
  CHECK(*ok == 42);
  auto bad = Twice(absl::NotFoundError("nope"));
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kNotFound);
  CHECK(bad.status().message() == "nope");
}

}  // namespace
}  // namespace trousseau
