#include "vault/auth/token_file_renewer.h"

#include <random>

#include "observability/log.h"
#include "vault/auth/token_calls.h"

namespace trousseau::vault::auth {

TokenFileRenewer::TokenFileRenewer(TokenSource& tokens, HttpTransport& http, Clock& clock,
                                   RenewerOptions options)
    : tokens_(tokens), http_(http), clock_(clock), opts_(std::move(options)) {}

TokenFileRenewer::~TokenFileRenewer() { Stop(); }

double TokenFileRenewer::Random() {
  if (opts_.random) return opts_.random();
  thread_local std::minstd_rand rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

SteadyTime TokenFileRenewer::PlanRenewal(SteadyTime now, std::chrono::seconds ttl) {
  const double factor = opts_.renew_fraction * (1.0 - opts_.renew_jitter * Random());
  const auto in = std::chrono::duration_cast<SteadyTime::duration>(
      std::chrono::duration<double>(static_cast<double>(ttl.count()) * factor));
  return now + in;
}

SteadyTime TokenFileRenewer::Step() {
  // step_mu_ guards Step's own state (current_, increment_, renew_*); mu_ only the snapshot and
  // stop_, and is never held across a Vault request: Snapshot() (metrics scrapes, /readyz) and
  // Stop() never wait for lookup-self or renew-self (up to request_timeout).
  std::lock_guard<std::mutex> step(step_mu_);
  const SteadyTime now = clock_.Now();
  const Deadline deadline = now + opts_.request_timeout;
  SteadyTime next = now + opts_.poll;
  auto token = tokens_.Token(deadline);
  if (!token.ok()) return next;  // the request path reports this; keep polling

  if (*token != current_) {
    // A new token (first start, or the file changed): learn its TTL and renewability.
    auto info = LookupSelf(http_, *token, deadline);
    current_ = *token;
    renew_due_ = false;
    if (!info.ok()) {
      RenewerSnapshot failed;
      failed.last_error = std::string(info.status().message());
      log::Warn("auth.renew", "token lookup-self failed; not renewing this token",
                {{"error", failed.last_error}});
      std::lock_guard<std::mutex> lock(mu_);
      snap_ = std::move(failed);
      return next;
    }
    renewable_ = info->renewable;
    // Ask for the TTL the token was created with: its remaining TTL would make every renewal
    // as short as the token was old when we first saw it (a token file replaced late in its
    // life, or re-read, kept being renewed for its leftover seconds).
    increment_ = info->creation_ttl.count() > 0 ? info->creation_ttl : info->ttl;
    {
      RenewerSnapshot learned;
      learned.known = true;
      learned.renewable = info->renewable;
      learned.ttl = info->ttl;
      learned.ttl_at = now;
      std::lock_guard<std::mutex> lock(mu_);
      snap_ = learned;
    }
    if (info->ttl.count() == 0 && info->has_expire_time && info->renewable) {
      // In its last second, not "does not expire": renew at once.
      renew_due_ = true;
      renew_at_ = now;
      log::Warn("auth.renew", "token expires within a second; renewing now");
    } else if (info->ttl.count() == 0) {
      log::Info("auth.renew", "token does not expire; nothing to renew");
    } else if (!info->renewable) {
      log::Warn("auth.renew", "token is not renewable; it must be replaced in the file before "
                "it expires", {{"ttl_s", static_cast<int64_t>(info->ttl.count())}});
    } else {
      renew_due_ = true;
      renew_at_ = PlanRenewal(now, info->ttl);
      log::Info("auth.renew", "token will be renewed at about two thirds of its TTL",
                {{"ttl_s", static_cast<int64_t>(info->ttl.count())},
                 {"renew_in_s", static_cast<int64_t>(std::chrono::duration_cast<std::chrono::seconds>(renew_at_ - now).count())}});
    }
  } else if (renew_due_ && now >= renew_at_) {
    const auto t0 = clock_.Now();
    auto info = RenewSelf(http_, current_, increment_, deadline);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now() - t0);
    if (info.ok()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++snap_.renewals;
        snap_.ttl = info->ttl;
        snap_.ttl_at = clock_.Now();
        snap_.renewable = info->renewable;
        snap_.last_error.clear();
      }
      if (info->ttl < increment_) {
        log::Warn("auth.renew", "Vault granted less than asked: the token nears its max TTL; "
                  "replace it in the token file before it expires",
                  {{"granted_s", static_cast<int64_t>(info->ttl.count())},
                   {"asked_s", static_cast<int64_t>(increment_.count())}});
      } else {
        log::Info("auth.renew", "token renewed",
                  {{"ttl_s", static_cast<int64_t>(info->ttl.count())},
                   {"duration_ms", static_cast<int64_t>(ms.count())}});
      }
      renew_due_ = info->renewable && info->ttl.count() > 0;
      if (renew_due_) renew_at_ = PlanRenewal(clock_.Now(), info->ttl);
    } else {
      const std::string error(info.status().message());
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++snap_.renewal_failures;
        snap_.last_error = error;
      }
      log::Warn("auth.renew", "token renewal failed; retrying",
                {{"error", error}, {"retry_in_ms", static_cast<int64_t>(opts_.retry.count())}});
      renew_at_ = clock_.Now() + opts_.retry;
    }
  }
  if (renew_due_ && renew_at_ < next) next = renew_at_;
  return next;
}

RenewerSnapshot TokenFileRenewer::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snap_;
}

void TokenFileRenewer::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void TokenFileRenewer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void TokenFileRenewer::Run() {
  for (;;) {
    const SteadyTime next = Step();
    std::unique_lock<std::mutex> lock(mu_);
    if (clock_.WaitUntil(lock, cv_, next, [this] { return stop_; })) return;
  }
}

}  // namespace trousseau::vault::auth
