#include "vault/auth/login_token_source.h"

#include <algorithm>
#include <random>
#include <string_view>

#include "observability/log.h"
#include "vault/auth/token_calls.h"

namespace trousseau::vault::auth {
namespace {

constexpr auto kIdleWake = std::chrono::hours(1);

int64_t Seconds(std::chrono::seconds s) { return static_cast<int64_t>(s.count()); }

}  // namespace

LoginTokenSource::LoginTokenSource(std::unique_ptr<Authenticator> authenticator,
                                   HttpTransport& http, Clock& clock, LifecycleOptions options)
    : auth_(std::move(authenticator)), http_(http), clock_(clock), opts_(std::move(options)) {
  if (!opts_.random) {
    auto gen = std::make_shared<std::mt19937_64>(std::random_device{}());
    // Called only under mu_, so the generator needs no lock of its own.
    opts_.random = [gen]() { return std::uniform_real_distribution<double>(0.0, 1.0)(*gen); };
  }
  stats_.method = auth_->method();
  stats_.mount = auth_->mount();
}

LoginTokenSource::~LoginTokenSource() { Stop(); }

std::string LoginTokenSource::Describe() const {
  return auth_->Describe() + " (token renewed by trousseau)";
}

double LoginTokenSource::Random() {
  double r = opts_.random();
  return (r >= 0.0 && r < 1.0) ? r : 0.0;
}

void LoginTokenSource::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  StartLocked();
}

void LoginTokenSource::StartLocked() {
  if (started_ || stop_) return;
  started_ = true;
  thread_ = std::thread([this] { Run(); });
}

void LoginTokenSource::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    worker_cv_.notify_all();
    waiters_cv_.notify_all();
  }
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

bool LoginTokenSource::UsableLocked(SteadyTime now) const {
  return token_ != nullptr && (!expires_ || now < expires_at_);
}

std::chrono::milliseconds LoginTokenSource::BackoffFor(int failures) {
  // b = initial * 2^(failures-1), capped; the wait is uniform in [b/2, b].
  auto b = opts_.backoff_initial;
  for (int i = 1; i < failures && b < opts_.backoff_max; ++i) b *= 2;
  b = std::min(b, opts_.backoff_max);
  const double r = Random();
  return std::chrono::milliseconds(
      static_cast<int64_t>(static_cast<double>(b.count()) * (0.5 + 0.5 * r)));
}

void LoginTokenSource::ScheduleLocked(SteadyTime base, std::chrono::seconds ttl, bool renewable,
                                      bool capped) {
  renewable_ = renewable;
  if (capped) {  // a renewal granted less than asked: the token cannot outlive base + ttl
    const SteadyTime end = base + ttl;
    max_expires_at_ = max_known_ ? std::min(max_expires_at_, end) : end;
    max_known_ = true;
  }
  if (ttl.count() <= 0 && !capped) {  // a token without expiry (e.g. a root or non-expiring token)
    expires_ = false;
    next_ = Next::kNone;
    return;
  }
  expires_ = true;
  expires_at_ = base + ttl;
  if (max_known_) expires_at_ = std::min(expires_at_, max_expires_at_);
  const double f = opts_.renew_fraction * (1.0 - opts_.renew_jitter * Random());
  next_at_ = base + std::chrono::duration_cast<SteadyTime::duration>(
                        std::chrono::duration<double>(static_cast<double>(ttl.count()) * f));
  if (!renewable) {
    next_ = Next::kLogin;
    next_login_reason_ = "token not renewable";
    return;
  }
  next_ = Next::kRenew;
  if (!max_known_) return;
  // The margin a renewal keeps before expiry. If the max TTL ends less than that after the next
  // renewal (or a renewal was already capped: renewing cannot help), log in instead, starting
  // the margin before the max TTL ends (at once if that is already past).
  const auto margin = std::chrono::duration_cast<SteadyTime::duration>(std::chrono::duration<double>(
      static_cast<double>(increment_.count()) * (1.0 - opts_.renew_fraction)));
  const SteadyTime login_at = max_expires_at_ - margin;
  if (capped || login_at <= next_at_) {
    next_ = Next::kLogin;
    next_login_reason_ = "max_ttl";
    next_at_ = std::max(base, std::min(login_at, next_at_));
  }
}

void LoginTokenSource::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    replan_ = false;
    const SteadyTime now = clock_.Now();
    const bool usable = UsableLocked(now);
    if (!usable || login_now_) {
      if (now < backoff_until_) {
        clock_.WaitUntil(lock, worker_cv_, backoff_until_, [this] { return stop_; });
        continue;
      }
      const char* reason = token_ == nullptr
                               ? (stats_.login_count + stats_.login_failures == 0 ? "first login"
                                                                                  : login_reason_)
                           : !usable ? "token expired"
                                     : login_reason_;
      DoLogin(lock, reason);
      continue;
    }
    if (next_ != Next::kNone && now >= next_at_) {
      if (next_ == Next::kRenew) {
        DoRenew(lock);
      } else {
        DoLogin(lock, next_login_reason_);
      }
      continue;
    }
    SteadyTime until = now + kIdleWake;
    if (next_ != Next::kNone) until = std::min(until, next_at_);
    if (expires_) until = std::min(until, expires_at_);
    clock_.WaitUntil(lock, worker_cv_, until, [this] { return stop_ || login_now_ || replan_; });
  }
}

void LoginTokenSource::DoLogin(std::unique_lock<std::mutex>& lock, const char* reason) {
  login_in_flight_ = true;
  login_now_ = false;
  const SteadyTime start = clock_.Now();
  lock.unlock();
  absl::StatusOr<LoginResult> res = auth_->Login(http_, start + opts_.request_timeout);
  std::optional<TokenInfo> info;
  absl::Status lookup_error;
  if (res.ok()) {
    auto li = LookupSelf(http_, res->token, clock_.Now() + opts_.request_timeout);
    if (li.ok()) {
      info = *li;
    } else {
      lookup_error = li.status();
    }
  }
  lock.lock();
  const SteadyTime end = clock_.Now();
  login_in_flight_ = false;
  ++logins_finished_;
  stats_.last_login_at = clock_.WallNow();
  stats_.last_login_duration = Ms(end - start);
  if (res.ok()) {
    token_ = res->token;
    obtained_at_ = start;
    current_refused_ = false;
    login_reason_ = "no token";
    const std::chrono::seconds ttl = info ? info->ttl : res->lease_duration;
    const bool renewable = info ? info->renewable : res->renewable;
    increment_ = res->lease_duration.count() > 0 ? res->lease_duration : ttl;
    max_known_ = info && info->explicit_max_ttl.count() > 0;
    if (max_known_) max_expires_at_ = start + info->explicit_max_ttl;
    ScheduleLocked(start, ttl, renewable, /*capped=*/false);
    login_now_ = false;
    consecutive_failures_ = 0;
    backoff_until_ = SteadyTime{};
    last_login_error_ = absl::OkStatus();
    ++stats_.login_count;
    if (std::string_view(reason) == "max_ttl") ++stats_.max_ttl_logins;
    stats_.last_login_ok = true;
    stats_.last_login_error.clear();
    log::Info("auth.login", "logged in to Vault",
              {{"method", auth_->method()},
               {"mount", auth_->mount()},
               {"reason", reason},
               {"duration_ms", stats_.last_login_duration.count()},
               {"ttl_s", Seconds(ttl)},
               {"max_ttl_s", max_known_ ? Seconds(std::chrono::duration_cast<std::chrono::seconds>(
                                              max_expires_at_ - start))
                                        : int64_t{0}},
               {"renewable", renewable},
               {"next", next_ == Next::kRenew ? "renew" : next_ == Next::kLogin ? "login" : "none"},
               {"next_in_ms", next_ == Next::kNone ? 0 : Ms(next_at_ - end).count()},
               {"logins", stats_.login_count},
               {"longest_wait_ms", stats_.longest_wait.count()}});
    if (!lookup_error.ok()) {
      log::Warn("auth.lookup", "lookup-self failed after login; using the login answer's TTL",
                {{"method", auth_->method()}, {"error", std::string(lookup_error.message())}});
    }
  } else {
    ++consecutive_failures_;
    const auto backoff = BackoffFor(consecutive_failures_);
    backoff_until_ = end + backoff;
    last_login_error_ = res.status();
    ++stats_.login_failures;
    stats_.last_login_ok = false;
    stats_.last_login_error = std::string(res.status().message());
    if (UsableLocked(end)) {  // a proactive login: the old token still serves meanwhile
      next_ = Next::kLogin;
      next_at_ = backoff_until_;
    }
    log::Warn("auth.login", "login failed",
              {{"method", auth_->method()},
               {"mount", auth_->mount()},
               {"reason", reason},
               {"error", stats_.last_login_error},
               {"duration_ms", stats_.last_login_duration.count()},
               {"consecutive_failures", consecutive_failures_},
               {"retry_in_ms", backoff.count()},
               {"old_token_still_valid", UsableLocked(end)}});
  }
  waiters_cv_.notify_all();
}

void LoginTokenSource::DoRenew(std::unique_lock<std::mutex>& lock) {
  const std::shared_ptr<const SecretBuffer> token = token_;
  const std::chrono::seconds asked = increment_;
  next_ = Next::kNone;
  const SteadyTime start = clock_.Now();
  lock.unlock();
  absl::StatusOr<TokenInfo> res = RenewSelf(http_, token, asked, start + opts_.request_timeout);
  lock.lock();
  const SteadyTime end = clock_.Now();
  stats_.last_renewal_at = clock_.WallNow();
  stats_.last_renewal_duration = Ms(end - start);
  if (res.ok()) {
    ++stats_.renewal_count;
    stats_.last_renewal_ok = true;
    stats_.last_renewal_error.clear();
  } else {
    ++stats_.renewal_failures;
    stats_.last_renewal_ok = false;
    stats_.last_renewal_error = std::string(res.status().message());
  }
  if (token_ != token) return;  // replaced or refused meanwhile: this answer no longer matters
  if (res.ok()) {
    const bool capped = res->ttl < asked;  // the token is near its max TTL
    ScheduleLocked(start, res->ttl, res->renewable, capped);
    fresh_refusals_ = 0;
    log::Info("auth.renew",
              next_ == Next::kLogin ? "token renewed; it is near its max TTL or no longer "
                                      "renewable, so the next step is a new login"
                                    : "token renewed",
              {{"method", auth_->method()},
               {"duration_ms", stats_.last_renewal_duration.count()},
               {"asked_s", Seconds(asked)},
               {"ttl_s", Seconds(res->ttl)},
               {"renewable", res->renewable},
               {"next", next_ == Next::kRenew ? "renew" : next_ == Next::kLogin ? "login" : "none"},
               {"next_in_ms", next_ == Next::kNone ? 0 : Ms(next_at_ - end).count()},
               {"max_ttl_left_ms", max_known_ ? Ms(max_expires_at_ - end).count() : int64_t{-1}},
               {"renewals", stats_.renewal_count}});
    return;
  }
  // Renewal failed: log in again now. A refused token (403) is dropped, so callers wait for the
  // login instead of failing with it; after a network error it serves until it expires.
  if (res.status().code() == absl::StatusCode::kPermissionDenied) token_ = nullptr;
  login_now_ = true;
  login_reason_ = "renewal failed";
  log::Warn("auth.renew", "renewal failed; logging in again",
            {{"method", auth_->method()},
             {"error", stats_.last_renewal_error},
             {"duration_ms", stats_.last_renewal_duration.count()},
             {"token_dropped", token_ == nullptr}});
}

absl::StatusOr<std::shared_ptr<const SecretBuffer>> LoginTokenSource::Token(Deadline deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_) return absl::UnavailableError(auth_->Where() + ": shutting down");
  StartLocked();
  SteadyTime now = clock_.Now();
  if (UsableLocked(now)) return token_;
  if (!login_in_flight_ && !last_login_error_.ok() && now < backoff_until_) {
    // No login storm: until the backoff ends, every caller gets the last error at once.
    return absl::UnavailableError(
        "no Vault token: " + std::string(last_login_error_.message()) + " (" +
        std::to_string(consecutive_failures_) + " failed login(s); next attempt in " +
        std::to_string(Ms(backoff_until_ - now).count()) + " ms)");
  }
  const SteadyTime wait_start = now;
  const uint64_t generation = logins_finished_;
  login_now_ = true;
  worker_cv_.notify_all();
  if (now < deadline) {
    clock_.WaitUntil(lock, waiters_cv_, deadline, [&] {
      return stop_ || logins_finished_ != generation || UsableLocked(clock_.Now());
    });
  }
  now = clock_.Now();
  const auto waited = Ms(now - wait_start);
  if (waited > stats_.longest_wait) {
    stats_.longest_wait = waited;
    log::Info("auth.wait", "longest wait for a Vault login so far",
              {{"method", auth_->method()}, {"wait_ms", waited.count()}});
  }
  if (UsableLocked(now)) return token_;
  if (stop_) return absl::UnavailableError(auth_->Where() + ": shutting down");
  if (logins_finished_ != generation && !last_login_error_.ok()) {
    return absl::UnavailableError("no Vault token: " + std::string(last_login_error_.message()));
  }
  return absl::DeadlineExceededError(
      auth_->Where() + ": no Vault token before the request deadline: waited " +
      std::to_string(waited.count()) + " ms for a login" +
      (last_login_error_.ok() ? std::string()
                              : "; last login error: " + std::string(last_login_error_.message())));
}

void LoginTokenSource::Invalidate(const std::shared_ptr<const SecretBuffer>& token) {
  std::lock_guard<std::mutex> lock(mu_);
  if (token == nullptr || token != token_ || current_refused_) return;
  current_refused_ = true;
  const SteadyTime now = clock_.Now();
  const auto age = now - obtained_at_;
  if (age < opts_.fresh_token_window) {
    ++fresh_refusals_;
  } else {
    fresh_refusals_ = 0;
  }
  if (fresh_refusals_ >= 2) {
    // Fresh tokens keep being refused: the policy, not the token, is the likely cause. Keep the
    // token (requests fail with Vault's permission error) and log in again only after a backoff.
    const auto backoff = BackoffFor(fresh_refusals_ - 1);
    const SteadyTime at = now + backoff;
    if (next_ != Next::kLogin || next_at_ > at) {
      next_ = Next::kLogin;
      next_at_ = at;
      next_login_reason_ = "Vault refused the token (403)";
      replan_ = true;
    }
    log::Warn("auth.invalidate",
              "Vault refused a token fresh from login (403) again: check that the "
              "policy grants the transit paths; next login after a backoff",
              {{"method", auth_->method()},
               {"token_age_ms", Ms(age).count()},
               {"retry_in_ms", backoff.count()}});
    worker_cv_.notify_all();
    return;
  }
  token_ = nullptr;
  login_now_ = true;
  login_reason_ = "Vault refused the token (403)";
  log::Info("auth.invalidate", "Vault refused the token (403); logging in again",
            {{"method", auth_->method()}, {"token_age_ms", Ms(age).count()}});
  worker_cv_.notify_all();
}

LifecycleSnapshot LoginTokenSource::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  LifecycleSnapshot s = stats_;
  const SteadyTime now = clock_.Now();
  s.has_token = UsableLocked(now);
  s.expires = s.has_token && expires_;
  s.remaining_ttl = s.expires ? Ms(expires_at_ - now) : std::chrono::milliseconds(0);
  s.renewable = s.has_token && renewable_;
  s.next_action = next_ == Next::kRenew ? "renew" : next_ == Next::kLogin ? "login" : "none";
  s.next_action_in = next_ == Next::kNone || next_at_ <= now
                         ? std::chrono::milliseconds(0)
                         : std::chrono::ceil<std::chrono::milliseconds>(next_at_ - now);
  s.consecutive_login_failures = consecutive_failures_;
  s.backoff_remaining = now < backoff_until_
                            ? std::chrono::ceil<std::chrono::milliseconds>(backoff_until_ - now)
                            : std::chrono::milliseconds(0);
  return s;
}

}  // namespace trousseau::vault::auth
