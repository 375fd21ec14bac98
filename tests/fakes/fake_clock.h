// FakeClock: manual time for unit tests. Nothing here sleeps.
//
// Two ways to wait:
//  - default ("free-running"): WaitUntil returns at once. If the predicate is already true it
//    returns true; otherwise it advances virtual time to `until` and returns the predicate.
//    A background loop therefore spins through its periods in virtual time.
//  - blocking (set_blocking(true)): WaitUntil parks on the caller's condition variable until
//    the predicate becomes true (the caller notifies it) or until a test thread calls
//    Advance()/Set() past `until`. Tests use WaitForWaits(n) to know a loop reached its wait.
//
// Advance() notifies parked waiters while holding their mutex, so no wake-up is lost. The
// condition variables and mutexes passed to WaitUntil must outlive any concurrent Advance().
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/clock.h"

namespace trousseau::fakes {

class FakeClock final : public Clock {
 public:
  // Starts an hour after the steady epoch, so that "time zero" values stand out as old.
  explicit FakeClock(SteadyTime start = SteadyTime{} + std::chrono::hours(1),
                     std::chrono::system_clock::time_point wall_start =
                         std::chrono::system_clock::time_point{} + std::chrono::hours(24 * 365 * 50))
      : now_(start), start_(start), wall_start_(wall_start) {}

  SteadyTime Now() const override {
    std::lock_guard<std::mutex> g(mu_);
    return now_;
  }

  std::chrono::system_clock::time_point WallNow() const override {
    std::lock_guard<std::mutex> g(mu_);
    return wall_start_ +
           std::chrono::duration_cast<std::chrono::system_clock::duration>(now_ - start_);
  }

  void set_blocking(bool blocking) {
    std::lock_guard<std::mutex> g(mu_);
    blocking_ = blocking;
  }

  // Moves virtual time forward and wakes parked waiters so they re-check their deadline.
  void Advance(std::chrono::nanoseconds d) {
    std::vector<std::shared_ptr<Waiter>> ws;
    {
      std::lock_guard<std::mutex> g(mu_);
      now_ += std::chrono::duration_cast<SteadyTime::duration>(d);
      ws = waiters_;
    }
    Notify(ws);
  }

  void Set(SteadyTime t) {
    std::vector<std::shared_ptr<Waiter>> ws;
    {
      std::lock_guard<std::mutex> g(mu_);
      now_ = t;
      ws = waiters_;
    }
    Notify(ws);
  }

  bool WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                 SteadyTime until, const std::function<bool()>& wake) override {
    bool blocking;
    {
      std::lock_guard<std::mutex> g(mu_);
      blocking = blocking_;
      ++waits_;
      last_until_ = until;
    }
    waits_cv_.notify_all();

    if (!blocking) {
      if (wake()) return true;
      {
        std::lock_guard<std::mutex> g(mu_);
        now_ = std::max(now_, until);
      }
      // Let another thread (e.g. one calling Stop()) take the caller's mutex before the
      // caller's loop comes round again. This yields the CPU; it does not sleep.
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
      return wake();
    }

    auto w = std::make_shared<Waiter>(Waiter{&cv, lock.mutex()});
    {
      std::lock_guard<std::mutex> g(mu_);
      waiters_.push_back(w);
    }
    bool woke = false;
    for (;;) {
      if (wake()) {
        woke = true;
        break;
      }
      if (Now() >= until) break;
      cv.wait(lock);
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      waiters_.erase(std::find(waiters_.begin(), waiters_.end(), w));
    }
    return woke;
  }

  // How many times WaitUntil has been entered.
  size_t waits() const {
    std::lock_guard<std::mutex> g(mu_);
    return waits_;
  }

  SteadyTime last_until() const {
    std::lock_guard<std::mutex> g(mu_);
    return last_until_;
  }

  // Blocks until WaitUntil has been entered at least n times. The real-time bound only keeps a
  // broken test from hanging; a passing test never reaches it. Returns false on timeout.
  bool WaitForWaits(size_t n, std::chrono::milliseconds bound = std::chrono::seconds(20)) const {
    std::unique_lock<std::mutex> g(mu_);
    return waits_cv_.wait_for(g, bound, [&] { return waits_ >= n; });
  }

 private:
  struct Waiter {
    std::condition_variable* cv;
    std::mutex* mu;
  };

  static void Notify(const std::vector<std::shared_ptr<Waiter>>& ws) {
    for (const auto& w : ws) {
      std::lock_guard<std::mutex> g(*w->mu);
      w->cv->notify_all();
    }
  }

  mutable std::mutex mu_;
  mutable std::condition_variable waits_cv_;
  SteadyTime now_;
  const SteadyTime start_;
  const std::chrono::system_clock::time_point wall_start_;
  bool blocking_ = false;
  size_t waits_ = 0;
  SteadyTime last_until_{};
  std::vector<std::shared_ptr<Waiter>> waiters_;
};

}  // namespace trousseau::fakes
