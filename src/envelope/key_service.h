// KeyService: what the gRPC adapters call. It enforces the KMS limits, names keys (key_id),
// and keeps the health and current key_id fresh in the background so Status never waits.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "envelope/binding.h"
#include "envelope/rollback.h"
#include "envelope/state_file.h"
#include "envelope/batcher.h"
#include "envelope/coalescer.h"
#include "hardening/secret_buffer.h"
#include "vault/transit_client.h"

namespace trousseau::envelope {

inline constexpr size_t kMaxPlaintextBytes = 64 * 1024;
inline constexpr size_t kMaxKeyIdBytes = 1024;
inline constexpr size_t kMaxAnnotationBytes = 32 * 1024;

struct EncryptResult {
  std::string ciphertext;
  std::string key_id;
  std::map<std::string, std::string> annotations;
  std::string node;
  std::string vault_request_id;  // for the audit record
};

struct DecryptResult {
  SecretBuffer plaintext;
  std::string node;
  std::string vault_request_id;  // for the audit record
};

struct HealthSnapshot {
  std::string healthz;  // "ok" or the reason it is not
  std::string key_id;   // empty until the first successful check
  std::string detail = "";  // what an operator should know even when healthz is "ok"
                        // (a degraded secondary Vault: docs/secondary.md); never sent to
                        // kube-apiserver, shown by /readyz
};

class KeyService {
 public:
  virtual ~KeyService() = default;
  // Enforces kMaxPlaintextBytes; the v2 ciphertext cap is the v2 adapter's to check.
  virtual absl::StatusOr<EncryptResult> Encrypt(std::string_view plaintext, Deadline deadline) = 0;
  virtual absl::StatusOr<DecryptResult> Decrypt(
      std::string_view ciphertext, std::string_view key_id,
      const std::map<std::string, std::string>& annotations, Deadline deadline) = 0;
  // Never blocks on Vault.
  virtual HealthSnapshot Health() const = 0;
};

// Validates caller input against the KMS contract's limits (shared by both API versions).
absl::Status CheckPlaintext(std::string_view plaintext);
absl::Status CheckDecryptInput(std::string_view ciphertext, std::string_view key_id,
                               const std::map<std::string, std::string>& annotations);
// KMS v2 caps the ciphertext at 1024 bytes, so a v2 plaintext must be small enough that its
// Transit wrapping ("vault:vN:" + base64(nonce + plaintext + tag)) fits: about 730 bytes. Checked
// before any network call. (v1beta1 has no such cap; its limit is kMaxPlaintextBytes.)
absl::Status CheckV2WrappedSizeFits(std::string_view plaintext);
size_t EstimatedWrappedSize(size_t plaintext_bytes);
// A fully qualified domain name, as kube-apiserver requires of annotation keys.
bool IsFqdn(std::string_view name);

// For the metrics endpoint: what the background check last learned.
struct KeyState {
  int64_t latest_version = 0;  // 0 before the first successful check
  std::optional<std::chrono::milliseconds> since_last_ok;  // unset: never succeeded
  uint64_t rollbacks_detected = 0;  // times a key rollback was newly detected (docs/rollback.md)
  bool rollback_active = false;     // Encrypt refused now because of one
  bool last_check_ok = false;       // the last background check succeeded
};

// While the last background check failed, the next one comes after at most this long.
inline constexpr std::chrono::milliseconds kRetryAfterFailure{10000};

struct TransitKeyServiceOptions {
  std::string namespace_;  // part of the key identity
  std::chrono::milliseconds refresh_period{60000};
  std::chrono::milliseconds stale_after{180000};
  std::chrono::milliseconds check_timeout{5000};
  BindingOptions binding;  // docs/binding.md; default: off
  // performance.* (docs/configuration.md): single-flight for identical Decrypts, and Transit
  // batch_input for concurrent calls (batch_max_items 1: no batching).
  bool coalesce_decrypts = true;
  size_t batch_max_items = 32;
  std::chrono::microseconds batch_max_wait{200};
  // state.file (docs/rollback.md): the rollback guard starts from the mark stored there, and
  // every raised mark is written there before Encrypt uses the new version. Null: memory only.
  // Not owned; outlives the service.
  StateFile* state_file = nullptr;
  // Prefix of this key's entry in the state file: "" for the primary, "secondary:" for the
  // vault.secondary cluster, whose key may have the same name (docs/formats.md section 5).
  std::string state_entry_prefix;
};

class TransitKeyService final : public KeyService {
 public:
  TransitKeyService(vault::TransitClient& transit, Clock& clock, TransitKeyServiceOptions options);
  ~TransitKeyService() override;

  absl::StatusOr<EncryptResult> Encrypt(std::string_view plaintext, Deadline deadline) override;
  absl::StatusOr<DecryptResult> Decrypt(std::string_view ciphertext, std::string_view key_id,
                                        const std::map<std::string, std::string>& annotations,
                                        Deadline deadline) override;
  HealthSnapshot Health() const override;
  KeyState State() const;

  // One health check now (the background thread calls this every refresh period).
  void RefreshOnce();
  // Starts/stops the background refresher.
  void Start();
  void Stop();

  // "<namespace/>mount/key:v<N>": stable across server addresses, changes on rotation.
  std::string KeyIdFor(int64_t version) const;
  // KeyIdFor plus "+aad1" when new seeds are bound (docs/formats.md section 4).
  std::string WrittenKeyIdFor(int64_t version) const;

  // The view the KMS v1beta1 adapter uses: never bound (v1beta1 has no annotations), refused
  // under binding.strict. Lives as long as this service.
  KeyService& V1Beta1View() { return v1_view_; }

 private:
  class V1Beta1ViewImpl final : public KeyService {
   public:
    explicit V1Beta1ViewImpl(TransitKeyService& owner) : owner_(owner) {}
    absl::StatusOr<EncryptResult> Encrypt(std::string_view plaintext, Deadline deadline) override;
    absl::StatusOr<DecryptResult> Decrypt(std::string_view ciphertext, std::string_view key_id,
                                          const std::map<std::string, std::string>& annotations,
                                          Deadline deadline) override;
    HealthSnapshot Health() const override { return owner_.Health(); }

   private:
    TransitKeyService& owner_;
  };

  absl::StatusOr<EncryptResult> EncryptImpl(std::string_view plaintext, Deadline deadline,
                                            bool bind);
  void Run();
  // state.file: writes the mark `info` raises (if it is consistent and not yet written).
  void PersistMark(const vault::KeyInfo& info);

  vault::TransitClient& transit_;
  Clock& clock_;
  const TransitKeyServiceOptions opts_;
  const std::string identity_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool ever_ok_ = false;
  bool last_ok_ = false;
  SteadyTime last_ok_at_{};
  std::string last_error_;
  int64_t latest_version_ = 0;
  RollbackGuard rollback_guard_;
  std::string rollback_;   // non-empty: a rollback was detected; Encrypt refused with this
  uint64_t rollbacks_detected_ = 0;
  std::mutex state_mu_;      // serialises PersistMark; guards the two below
  KeyMark persisted_;        // what the state file holds for this key
  std::string state_error_;  // the last write's failure, logged once
  std::string key_type_problem_;  // non-empty: binding on and the key type cannot bind
  V1Beta1ViewImpl v1_view_{*this};
  std::thread thread_;
  std::unique_ptr<TransitBatcher> batcher_;       // null: one Vault call per request
  std::unique_ptr<DecryptCoalescer> coalescer_;   // null: no single-flight
};

}  // namespace trousseau::envelope
