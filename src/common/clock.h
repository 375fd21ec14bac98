// Injected time: everything that waits or expires reads a Clock, so unit tests never sleep.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace trousseau {

using SteadyTime = std::chrono::steady_clock::time_point;
using Deadline = std::chrono::steady_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual SteadyTime Now() const = 0;
  virtual std::chrono::system_clock::time_point WallNow() const = 0;
  // Waits until `until` or until `wake` returns true after a notify on `cv`.
  // Returns true if woken by the predicate. Fakes advance virtual time instead of sleeping.
  virtual bool WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                         SteadyTime until, const std::function<bool()>& wake) = 0;
};

class RealClock final : public Clock {
 public:
  SteadyTime Now() const override { return std::chrono::steady_clock::now(); }
  std::chrono::system_clock::time_point WallNow() const override {
    return std::chrono::system_clock::now();
  }
  bool WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                 SteadyTime until, const std::function<bool()>& wake) override {
    return cv.wait_until(lock, until, wake);
  }
};

// The process-wide real clock.
Clock& SystemClock();

}  // namespace trousseau
