// DecryptCoalescer: single-flight for identical Decrypts in flight at once.
//
// kube-apiserver sends about ten identical Decrypts per DEK seed at every start. The first
// caller of a key leads: it makes the Vault call; callers with the same key that arrive while it
// is at Vault wait for it, and each gets its own SecretBuffer copy of the plaintext. Nothing is
// kept after the call: the flight leaves the table before its answer is handed out, and the
// one shared copy dies (wiped) with the last waiter to take it.
//
// A waiter's deadline is its own: it stops waiting at its deadline; and when the leader's call
// failed with DEADLINE_EXCEEDED or UNAVAILABLE under a deadline earlier than the waiter's, the
// waiter tries again (leading a new call or joining one) instead of inheriting that failure.
// Other errors (bad ciphertext, permission denied, ...) are the answer to the question and are
// handed to every waiter.
//
// The key must hold everything that can change the answer: see DecryptKey.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "vault/transit_client.h"

namespace trousseau::envelope {

// An unambiguous key (length-prefixed fields) over the ciphertext, the key_id, every
// annotation, and the associated_data sent to Vault.
std::string DecryptKey(std::string_view ciphertext, std::string_view key_id,
                       const std::map<std::string, std::string>& annotations,
                       std::string_view associated_data);

class DecryptCoalescer {
 public:
  using Call = std::function<absl::StatusOr<vault::Unwrapped>(Deadline)>;

  explicit DecryptCoalescer(Clock& clock) : clock_(clock) {}

  // Runs `call` with `deadline`, or waits for an identical call already in flight.
  absl::StatusOr<vault::Unwrapped> Do(const std::string& key, Deadline deadline, const Call& call);

  // Calls in flight now (for tests).
  size_t InFlight() const;

 private:
  struct Flight {
    Deadline deadline;         // the leader's: the call runs under it
    bool done = false;
    int waiting = 0;           // waiters that have not taken their answer yet
    absl::Status status;
    vault::Unwrapped shared;   // the one copy waiters clone from; moved out by the last one
    std::condition_variable cv;
  };

  Clock& clock_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Flight>, std::less<>> flights_;
};

}  // namespace trousseau::envelope
