// Redundant key-encryption keys on two Vault clusters (docs/secondary.md, docs/formats.md
// section 6): a KeyService over two TransitKeyServices. Each seed is wrapped by both; the
// primary's Transit ciphertext is the KMS ciphertext and the secondary's travels in the
// `secondary.trousseau.io` annotation. Decrypt asks the primary and falls back to the
// secondary's copy only when the primary is unavailable or has lost its key, never when the
// primary says the ciphertext is bad.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "envelope/key_service.h"

namespace trousseau::envelope {

inline constexpr std::string_view kSecondaryAnnotation = "secondary.trousseau.io";
inline constexpr int kSecondaryFormatVersion = 1;
// The key_id suffix of a seed wrapped by the primary only (best_effort, secondary down).
inline constexpr std::string_view kUnwrappedMark = "unwrapped";

enum class SecondaryPolicy {
  kRequired,    // Encrypt fails (UNAVAILABLE) unless both clusters wrap the seed
  kBestEffort,  // the primary alone wraps it; marked, counted, healed by the next seed
};

struct RedundantKeyServiceOptions {
  SecondaryPolicy policy = SecondaryPolicy::kRequired;
  // Read only the secondary's copy first (disaster recovery after the primary's key was
  // recreated; docs/secondary.md). Default: the primary first, the secondary on loss only.
  bool secondary_first = false;
  std::string secondary_name = "secondary";  // in messages: e.g. its first address
};

// "1;<secondary key_id>;<vault:vN:...>" and back. INVALID_ARGUMENT naming the annotation.
std::string SecondaryAnnotationV1(std::string_view key_id, std::string_view ciphertext);
struct ParsedSecondary {
  std::string key_id;
  std::string ciphertext;
};
absl::StatusOr<ParsedSecondary> ParseSecondaryAnnotation(std::string_view value);

// The primary's answer means "unavailable or its key is gone" (fall back), as opposed to "the
// ciphertext is bad", "not allowed" or "misconfigured" (no fallback). docs/secondary.md.
bool PrimaryLost(const absl::Status& status);

struct SecondaryState {
  bool secondary_up = false;     // the secondary wraps new seeds now
  bool primary_up = false;       // the primary's last check succeeded
  int64_t secondary_version = 0; // latest secondary key version seen
  uint64_t unwrapped = 0;        // seeds wrapped by the primary only (best_effort)
  uint64_t fallbacks = 0;        // Decrypts answered from the secondary's copy
  uint64_t secondary_encrypt_failures = 0;
};

class RedundantKeyService final : public KeyService {
 public:
  RedundantKeyService(TransitKeyService& primary, TransitKeyService& secondary, Clock& clock,
                      RedundantKeyServiceOptions options);

  absl::StatusOr<EncryptResult> Encrypt(std::string_view plaintext, Deadline deadline) override;
  absl::StatusOr<DecryptResult> Decrypt(std::string_view ciphertext, std::string_view key_id,
                                        const std::map<std::string, std::string>& annotations,
                                        Deadline deadline) override;
  HealthSnapshot Health() const override;
  SecondaryState State() const;

 private:
  // The secondary wraps new seeds: its check is ok and no Encrypt failed since that check.
  bool SecondaryUsable(std::string* why) const;
  void MarkSecondaryFailed(const absl::Status& st);
  // The primary's background check fails (not a rollback, not a wrong key type) after it once
  // knew its key: it is down or lost.
  bool PrimaryDown() const;
  EncryptResult SecondaryOnly(EncryptResult secondary);
  std::string CombinedKeyId(std::string_view primary, std::string_view secondary) const;
  absl::StatusOr<DecryptResult> FromSecondary(std::string_view value, std::string_view key_id,
                                              const std::map<std::string, std::string>& annotations,
                                              Deadline deadline);

  TransitKeyService& primary_;
  TransitKeyService& secondary_;
  Clock& clock_;
  const RedundantKeyServiceOptions opts_;

  mutable std::mutex mu_;
  std::optional<SteadyTime> failed_at_;  // an Encrypt on the secondary failed then
  std::string failed_why_;
  std::atomic<uint64_t> unwrapped_{0};
  std::atomic<uint64_t> fallbacks_{0};
  std::atomic<uint64_t> secondary_failures_{0};
  std::atomic<bool> falling_back_{false};  // for one log line per episode, not per call
};

}  // namespace trousseau::envelope
