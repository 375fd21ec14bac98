// LoginTokenSource: a TokenSource that logs in with an Authenticator and keeps the token alive.
//
// One background thread owns every login and renewal, so at most one is in flight:
//   - after a login: lookup-self for the TTL and renewability (the login answer is the fallback);
//   - renew-self at about two thirds of the TTL, a little earlier with jitter;
//   - log in again (while the old token still serves) when the token is not renewable, or when
//     its max TTL would end before the next renewal could keep the usual margin (reason
//     "max_ttl"). The max TTL is known from lookup-self's explicit_max_ttl, or from a renewal
//     that granted less than asked (a role's token_max_ttl). The margin is what a renewal keeps
//     before expiry: increment x (1 - renew_fraction), so the new login starts that long before
//     the max TTL ends, never after;
//   - log in again at once when a renewal fails or Vault refuses the token (Invalidate on 403);
//   - after a failed login, wait (1 s doubling to 30 s, with jitter) before the next one, and
//     answer callers with the last error meanwhile instead of hammering Vault.
// Callers of Token() that find no usable token wake the thread and wait for the login within
// their own deadline. All timing is on the injected Clock; unit tests never sleep.
//
// Snapshot() is a thread-safe copy of the lifecycle state for logs and (later) metrics.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "vault/auth/authenticator.h"
#include "vault/token_source.h"

namespace trousseau::vault::auth {

struct LifecycleOptions {
  // Bound on each login, lookup-self and renew-self call.
  std::chrono::milliseconds request_timeout{5000};
  // Backoff after failed logins: initial, doubling up to max; each wait is drawn uniformly from
  // [b/2, b] for the current bound b.
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_max{30000};
  // Renew (or re-login) at ttl * renew_fraction * (1 - renew_jitter * r), r uniform in [0, 1).
  double renew_fraction = 2.0 / 3.0;
  double renew_jitter = 0.1;
  // A token refused (403) within this time after its login, twice in a row, is taken as a
  // policy problem, not an expired token: the next login waits for the backoff.
  std::chrono::milliseconds fresh_token_window{2000};
  // Uniform random numbers in [0, 1) for the jitter. Default: a seeded PRNG.
  std::function<double()> random;
};

// What the metrics endpoint will read. Times are wall-clock; durations in milliseconds.
struct LifecycleSnapshot {
  std::string method;  // "approle", ...
  std::string mount;   // "approle" for auth/approle
  bool has_token = false;
  bool expires = false;                        // false: no token, or a token without TTL
  std::chrono::milliseconds remaining_ttl{0};  // meaningful when expires
  bool renewable = false;

  uint64_t login_count = 0;  // successful logins
  uint64_t max_ttl_logins = 0;  // of which started because the token neared its max TTL
  uint64_t login_failures = 0;
  std::optional<std::chrono::system_clock::time_point> last_login_at;
  bool last_login_ok = false;
  std::chrono::milliseconds last_login_duration{0};
  std::string last_login_error;  // empty when the last login succeeded

  uint64_t renewal_count = 0;  // successful renewals
  uint64_t renewal_failures = 0;
  std::optional<std::chrono::system_clock::time_point> last_renewal_at;
  bool last_renewal_ok = false;
  std::chrono::milliseconds last_renewal_duration{0};
  std::string last_renewal_error;

  // The longest any Token() caller waited for a login (successful or not).
  std::chrono::milliseconds longest_wait{0};
  // What the background thread does next ("renew", "login" or "none") and in how long.
  std::string next_action = "none";
  std::chrono::milliseconds next_action_in{0};
  // Consecutive failed logins, and how long until the next attempt is allowed (0 if none).
  int consecutive_login_failures = 0;
  std::chrono::milliseconds backoff_remaining{0};
};

class LoginTokenSource final : public TokenSource {
 public:
  LoginTokenSource(std::unique_ptr<Authenticator> authenticator, HttpTransport& http,
                   Clock& clock, LifecycleOptions options = {});
  ~LoginTokenSource() override;

  // Starts the background thread (idempotent). Token() starts it too, so the thread and the
  // first login come after the process locked itself down, when the first request arrives.
  void Start();
  // Stops and joins the thread; Token() then fails fast. Idempotent.
  void Stop();

  absl::StatusOr<std::shared_ptr<const SecretBuffer>> Token(Deadline deadline) override;
  void Invalidate(const std::shared_ptr<const SecretBuffer>& token) override;
  std::string Describe() const override;

  LifecycleSnapshot Snapshot() const;

 private:
  enum class Next { kNone, kRenew, kLogin };

  void Run();
  void StartLocked();
  bool UsableLocked(SteadyTime now) const;
  void DoLogin(std::unique_lock<std::mutex>& lock, const char* reason);
  void DoRenew(std::unique_lock<std::mutex>& lock);
  // Sets token timing from a fresh TTL measured from `base` and plans the next step.
  // `capped`: a renewal granted less than asked, so the token ends at base + ttl whatever we do.
  void ScheduleLocked(SteadyTime base, std::chrono::seconds ttl, bool renewable, bool capped);
  std::chrono::milliseconds BackoffFor(int failures);
  std::chrono::milliseconds Ms(std::chrono::nanoseconds d) const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d);
  }
  double Random();

  const std::unique_ptr<Authenticator> auth_;
  HttpTransport& http_;
  Clock& clock_;
  LifecycleOptions opts_;

  mutable std::mutex mu_;
  std::condition_variable worker_cv_;   // wakes the background thread
  std::condition_variable waiters_cv_;  // wakes Token() callers
  std::thread thread_;
  bool started_ = false;
  bool stop_ = false;

  // The token and its timing.
  std::shared_ptr<const SecretBuffer> token_;
  SteadyTime obtained_at_{};  // when the login that produced it was sent
  bool expires_ = false;
  SteadyTime expires_at_{};
  bool renewable_ = false;
  std::chrono::seconds increment_{0};  // asked at each renewal: the TTL the login granted
  bool max_known_ = false;             // max_expires_at_ is known (explicit or from a renewal)
  SteadyTime max_expires_at_{};        // no renewal extends the token beyond this

  // What the thread does next.
  Next next_ = Next::kNone;
  SteadyTime next_at_{};
  const char* next_login_reason_ = "token not renewable";  // when next_ == kLogin
  bool login_now_ = false;  // a caller or Invalidate wants a login as soon as allowed
  bool replan_ = false;     // the plan (next_, next_at_) changed from outside the thread
  bool login_in_flight_ = false;
  uint64_t logins_finished_ = 0;  // generation counter for waiting callers

  absl::Status last_login_error_;
  int consecutive_failures_ = 0;
  SteadyTime backoff_until_{};
  int fresh_refusals_ = 0;
  bool current_refused_ = false;       // Invalidate already acted on the current token
  const char* login_reason_ = "no token";

  LifecycleSnapshot stats_;  // counters and last outcomes; token fields filled by Snapshot()
  std::function<double()> default_random_;
};

}  // namespace trousseau::vault::auth
