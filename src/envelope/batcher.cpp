#include "envelope/batcher.h"

#include <algorithm>

#include "observability/metrics.h"

namespace trousseau::envelope {
namespace {

bool RetryableWithMoreTime(const absl::Status& st) {
  return st.code() == absl::StatusCode::kDeadlineExceeded ||
         st.code() == absl::StatusCode::kUnavailable;
}

}  // namespace

TransitBatcher::TransitBatcher(vault::TransitClient& transit, Clock& clock, BatchOptions options)
    : transit_(transit), clock_(clock), opts_(options) {}

absl::StatusOr<vault::Wrapped> TransitBatcher::Encrypt(std::string_view plaintext,
                                                       int64_t key_version,
                                                       std::string_view associated_data,
                                                       Deadline deadline) {
  Item item;
  item.op = Op::kEncrypt;
  item.text = plaintext;
  item.version = key_version;
  item.associated_data = associated_data;
  item.deadline = deadline;
  Submit(item);
  if (!item.status.ok()) return item.status;
  return std::move(item.wrapped);
}

absl::StatusOr<vault::Unwrapped> TransitBatcher::Decrypt(std::string_view ciphertext,
                                                         std::string_view associated_data,
                                                         Deadline deadline) {
  Item item;
  item.op = Op::kDecrypt;
  item.text = ciphertext;
  item.associated_data = associated_data;
  item.deadline = deadline;
  Submit(item);
  if (!item.status.ok()) return item.status;
  return std::move(item.unwrapped);
}

void TransitBatcher::Submit(Item& item) {
  std::unique_lock<std::mutex> lock(mu_);
  if (clock_.Now() >= item.deadline) {
    item.status = absl::DeadlineExceededError("the deadline passed before the Vault call");
    return;
  }
  const GroupKey key{item.op, item.op == Op::kEncrypt ? item.version : 0};
  std::shared_ptr<Group>& slot = open_[key];
  const bool leader = slot == nullptr;
  if (leader) slot = std::make_shared<Group>();
  std::shared_ptr<Group> group = slot;
  group->items.push_back(&item);
  if (group->items.size() >= opts_.max_items) {
    open_.erase(key);
    group->closed = true;
    group->cv.notify_all();
  }

  if (!leader) {
    // The leader answers within the earliest member deadline, so this wait is bounded.
    group->cv.wait(lock, [&] { return item.done; });
    lock.unlock();
    if (item.retry_alone) CallAlone(item);
    return;
  }

  if (!group->closed && in_flight_ > 0) {
    // Others are at Vault: their callers will be back soon. Wait a little for company, never
    // past the earliest deadline in the group.
    Deadline until = clock_.Now() + opts_.max_wait;
    for (const Item* m : group->items) until = std::min(until, m->deadline);
    clock_.WaitUntil(lock, group->cv, until, [&] { return group->closed; });
  }
  if (!group->closed) {
    auto it = open_.find(key);
    if (it != open_.end() && it->second == group) open_.erase(it);
    group->closed = true;
  }
  ++in_flight_;
  std::vector<Item*> items = group->items;  // closed: nobody adds to it any more
  lock.unlock();

  Execute(item.op, items);

  lock.lock();
  --in_flight_;
  for (Item* m : items) m->done = true;
  group->cv.notify_all();
  lock.unlock();
  if (item.retry_alone) CallAlone(item);
}

void TransitBatcher::CallAlone(Item& item) {
  item.retry_alone = false;
  item.status = absl::OkStatus();
  if (clock_.Now() >= item.deadline) {
    item.status = absl::DeadlineExceededError("the deadline passed before the Vault call");
    return;
  }
  metrics::ObserveVaultBatch(item.op == Op::kEncrypt ? "encrypt" : "decrypt", 1);
  if (item.op == Op::kEncrypt) {
    // A batch of one is the plain call (with the cluster binding's associated data, if any).
    absl::StatusOr<vault::Wrapped> r =
        transit_.Encrypt(item.text, item.version, item.deadline, item.associated_data);
    if (r.ok()) {
      item.wrapped = std::move(*r);
    } else {
      item.status = r.status();
    }
    return;
  }
  absl::StatusOr<vault::Unwrapped> r =
      transit_.Decrypt(item.text, item.deadline, item.associated_data);
  if (r.ok()) {
    item.unwrapped = std::move(*r);
  } else {
    item.status = r.status();
  }
}

void TransitBatcher::Execute(Op op, std::vector<Item*>& items) {
  // Members whose deadline passed while they waited are answered now, without Vault.
  const SteadyTime now = clock_.Now();
  std::vector<Item*> live;
  live.reserve(items.size());
  for (Item* m : items) {
    if (now >= m->deadline) {
      m->status = absl::DeadlineExceededError("the deadline passed while waiting for a Vault batch");
    } else {
      live.push_back(m);
    }
  }
  if (live.empty()) return;
  if (live.size() == 1) {
    CallAlone(*live[0]);
    return;
  }
  Deadline deadline = live[0]->deadline;
  for (const Item* m : live) deadline = std::min(deadline, m->deadline);
  metrics::ObserveVaultBatch(op == Op::kEncrypt ? "encrypt" : "decrypt", live.size());

  // The whole call failed: fan the error out, except to members who can do better alone.
  auto fail_all = [&](const absl::Status& st) {
    const bool refused_as_a_whole = st.code() == absl::StatusCode::kInvalidArgument;
    for (Item* m : live) {
      m->status = st;
      if (refused_as_a_whole || (RetryableWithMoreTime(st) && m->deadline > deadline)) {
        m->retry_alone = true;
      }
    }
  };

  if (op == Op::kEncrypt) {
    std::vector<vault::EncryptItem> in;
    in.reserve(live.size());
    for (const Item* m : live) {
      in.push_back({m->text, m->version, std::string(m->associated_data)});
    }
    auto results = transit_.EncryptBatch(in, deadline);
    if (!results.ok()) return fail_all(results.status());
    for (size_t i = 0; i < live.size(); ++i) {
      auto& r = (*results)[i];
      Item& m = *live[i];
      if (r.ok()) {
        m.wrapped = std::move(*r);
      } else {
        m.status = r.status();
      }
    }
    return;
  }
  std::vector<vault::DecryptItem> in;
  in.reserve(live.size());
  for (const Item* m : live) in.push_back({m->text, std::string(m->associated_data)});
  auto results = transit_.DecryptBatch(in, deadline);
  if (!results.ok()) return fail_all(results.status());
  for (size_t i = 0; i < live.size(); ++i) {
    auto& r = (*results)[i];
    if (r.ok()) {
      live[i]->unwrapped = std::move(*r);
    } else {
      live[i]->status = r.status();
    }
  }
}

}  // namespace trousseau::envelope
