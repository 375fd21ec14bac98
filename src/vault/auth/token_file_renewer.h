// Keeps a token read from a file alive: the original design needed the pods deleted to pick up
// a renewed token; here the plugin renews it itself, and still switches to a new token as soon
// as the file changes (TokenFileSource re-reads it on every request).
//
// At each wake-up (Step): look the current token up when it is new (TTL, renewability); renew it
// with renew-self at about two thirds of its TTL, with jitter; warn when Vault grants less than
// asked (the token nears its max TTL and must be replaced in the file); wake at least every
// `poll` to notice a replaced file. Tokens that do not expire, or are not renewable (a Vault
// Agent's), are left alone. All timing is on the injected Clock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "common/clock.h"
#include "vault/http_transport.h"
#include "vault/token_source.h"

namespace trousseau::vault::auth {

struct RenewerOptions {
  std::chrono::milliseconds request_timeout{5000};
  std::chrono::milliseconds poll{30000};         // longest sleep between checks
  std::chrono::milliseconds retry{10000};        // after a failed renewal
  double renew_fraction = 2.0 / 3.0;
  double renew_jitter = 0.1;                     // renew up to 10% earlier
  std::function<double()> random;               // uniform [0, 1); default: seeded PRNG
};

struct RenewerSnapshot {
  bool known = false;            // the current token has been looked up
  bool renewable = false;
  std::chrono::seconds ttl{0};   // at the last lookup or renewal; 0: does not expire
  SteadyTime ttl_at{};           // when `ttl` was learned (remaining = ttl - (now - ttl_at))
  uint64_t renewals = 0;
  uint64_t renewal_failures = 0;
  std::string last_error;
};

class TokenFileRenewer {
 public:
  TokenFileRenewer(TokenSource& tokens, HttpTransport& http, Clock& clock,
                   RenewerOptions options = {});
  ~TokenFileRenewer();

  void Start();
  void Stop();
  // One round of work; returns when the next round is due. The thread calls it in a loop;
  // unit tests call it directly.
  SteadyTime Step();
  RenewerSnapshot Snapshot() const;

 private:
  void Run();
  double Random();
  SteadyTime PlanRenewal(SteadyTime now, std::chrono::seconds ttl);

  TokenSource& tokens_;
  HttpTransport& http_;
  Clock& clock_;
  RenewerOptions opts_;

  mutable std::mutex mu_;  // snap_ and stop_; never held across a Vault request
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;

  std::mutex step_mu_;  // serialises Step(); guards the fields below
  std::shared_ptr<const SecretBuffer> current_;
  std::chrono::seconds increment_{0};
  bool renewable_ = false;
  bool renew_due_ = false;
  SteadyTime renew_at_{};
  RenewerSnapshot snap_;  // guarded by mu_
};

}  // namespace trousseau::vault::auth
