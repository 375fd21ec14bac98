#include "envelope/coalescer.h"

#include "observability/metrics.h"

namespace trousseau::envelope {
namespace {

void Field(std::string& out, std::string_view v) {
  out += std::to_string(v.size());
  out += ':';
  out += v;
}

}  // namespace

std::string DecryptKey(std::string_view ciphertext, std::string_view key_id,
                       const std::map<std::string, std::string>& annotations,
                       std::string_view associated_data) {
  std::string key;
  key.reserve(ciphertext.size() + key_id.size() + associated_data.size() + 32);
  Field(key, ciphertext);
  Field(key, key_id);
  Field(key, associated_data);
  key += std::to_string(annotations.size());
  key += '#';
  for (const auto& [k, v] : annotations) {  // std::map: a canonical order
    Field(key, k);
    Field(key, v);
  }
  return key;
}

size_t DecryptCoalescer::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return flights_.size();
}

absl::StatusOr<vault::Unwrapped> DecryptCoalescer::Do(const std::string& key, Deadline deadline,
                                                      const Call& call) {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (clock_.Now() >= deadline) {
      return absl::DeadlineExceededError("the deadline passed before the Vault call");
    }
    auto it = flights_.find(key);
    if (it == flights_.end()) {
      // Lead: make the call, then publish to whoever joined meanwhile.
      auto f = std::make_shared<Flight>();
      f->deadline = deadline;
      flights_.emplace(key, f);
      lock.unlock();
      absl::StatusOr<vault::Unwrapped> r = call(deadline);
      lock.lock();
      flights_.erase(key);  // nobody can join from here on: no plaintext outlives the call
      f->done = true;
      if (!r.ok()) {
        f->status = r.status();
      } else if (f->waiting > 0) {
        f->shared.plaintext = r->plaintext.Clone();
        f->shared.node = r->node;
        f->shared.request_id = r->request_id;
      }
      f->cv.notify_all();
      return r;
    }
    // Join the call in flight.
    std::shared_ptr<Flight> f = it->second;
    ++f->waiting;
    metrics::KmsCoalesced();
    const bool done = clock_.WaitUntil(lock, f->cv, deadline, [&] { return f->done; });
    --f->waiting;
    if (!done) {
      return absl::DeadlineExceededError(
          "the deadline passed while waiting for an identical Decrypt already at Vault");
    }
    if (f->status.ok()) {
      vault::Unwrapped out;
      // The last waiter takes the shared copy itself, so none is left behind.
      out.plaintext = f->waiting == 0 ? std::move(f->shared.plaintext) : f->shared.plaintext.Clone();
      out.node = f->shared.node;
      out.request_id = f->shared.request_id;
      return out;
    }
    const auto code = f->status.code();
    const bool deadline_bound =
        code == absl::StatusCode::kDeadlineExceeded || code == absl::StatusCode::kUnavailable;
    if (deadline_bound && deadline > f->deadline) continue;  // more time than the leader had
    return f->status;
  }
}

}  // namespace trousseau::envelope
