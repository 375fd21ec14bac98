// TransitBatcher: concurrent Encrypts (and Decrypts) share one Transit batch_input call.
//
// No thread of its own. The first caller to find no open batch becomes its leader:
// - if no other call of this batcher is at Vault, it sends at once (a lone caller never waits);
// - otherwise it waits up to `max_wait` for company, or until the batch holds `max_items`;
// then it makes the call on its own thread and hands every member its own result. A batch of
// one goes out as the plain (non-batch) call.
//
// Deadlines: the call's deadline is the earliest member's; members whose deadline has already
// passed are answered DEADLINE_EXCEEDED and left out. When the whole call fails with
// DEADLINE_EXCEEDED or UNAVAILABLE, a member with a later deadline than the call's retries
// alone with its own; when Vault refuses the batch as a whole (a 400 without per-item results),
// every member retries alone, so each caller gets Vault's answer to its own request.
//
// Key versions: Encrypts are grouped by the pinned key version (the one Status reports), and
// each item carries it (OpenBao ignores a top-level key_version in batch mode). As for a single
// call, the version (and so the key_id) of a result is read from its own ciphertext.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "vault/transit_client.h"

namespace trousseau::envelope {

struct BatchOptions {
  size_t max_items = 32;  // 1 disables batching
  std::chrono::microseconds max_wait{200};
};

// The most items one batch may hold: OpenBao's default max_request_json_strings (1000) allows
// about 140 items of 7 strings (value, associated_data, reference with their keys, key_version).
inline constexpr size_t kMaxBatchItems = 128;

class TransitBatcher {
 public:
  TransitBatcher(vault::TransitClient& transit, Clock& clock, BatchOptions options);

  absl::StatusOr<vault::Wrapped> Encrypt(std::string_view plaintext, int64_t key_version,
                                         std::string_view associated_data, Deadline deadline);
  absl::StatusOr<vault::Unwrapped> Decrypt(std::string_view ciphertext,
                                           std::string_view associated_data, Deadline deadline);

  const BatchOptions& options() const { return opts_; }

 private:
  enum class Op { kEncrypt, kDecrypt };
  struct Item {
    Op op = Op::kEncrypt;
    std::string_view text;  // plaintext or ciphertext; the caller's, valid until it returns
    int64_t version = 0;
    std::string_view associated_data;
    Deadline deadline;
    // Filled by the leader:
    bool done = false;
    bool retry_alone = false;
    absl::Status status;
    vault::Wrapped wrapped;
    vault::Unwrapped unwrapped;
  };
  struct Group {
    std::vector<Item*> items;
    bool closed = false;
    std::condition_variable cv;
  };
  using GroupKey = std::pair<Op, int64_t>;

  void Submit(Item& item);
  void Execute(Op op, std::vector<Item*>& items);
  void CallAlone(Item& item);

  vault::TransitClient& transit_;
  Clock& clock_;
  const BatchOptions opts_;

  std::mutex mu_;
  std::map<GroupKey, std::shared_ptr<Group>> open_;
  int in_flight_ = 0;  // calls of this batcher at Vault now (any op): the sign of company
};

}  // namespace trousseau::envelope
