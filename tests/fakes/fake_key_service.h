// FakeKeyService: what the gRPC adapters see, scripted. Records the last call's inputs.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "envelope/key_service.h"

namespace trousseau::fakes {

class FakeKeyService final : public envelope::KeyService {
 public:
  absl::StatusOr<envelope::EncryptResult> Encrypt(std::string_view plaintext,
                                                  Deadline deadline) override {
    WaitAtGate();
    std::lock_guard<std::mutex> g(mu_);
    ++encrypt_calls_;
    last_plaintext_ = std::string(plaintext);
    last_deadline_ = deadline;
    if (!encrypt_error_.ok()) return encrypt_error_;
    return encrypt_result_;
  }

  absl::StatusOr<envelope::DecryptResult> Decrypt(
      std::string_view ciphertext, std::string_view key_id,
      const std::map<std::string, std::string>& annotations, Deadline deadline) override {
    WaitAtGate();
    std::lock_guard<std::mutex> g(mu_);
    ++decrypt_calls_;
    last_ciphertext_ = std::string(ciphertext);
    last_key_id_ = std::string(key_id);
    last_annotations_ = annotations;
    last_deadline_ = deadline;
    if (!decrypt_error_.ok()) return decrypt_error_;
    envelope::DecryptResult r;
    r.plaintext = SecretBuffer::CopyOf(decrypt_plaintext_);
    r.node = decrypt_node_;
    r.vault_request_id = decrypt_request_id_;
    return r;
  }

  envelope::HealthSnapshot Health() const override {
    std::lock_guard<std::mutex> g(mu_);
    ++health_calls_;
    return health_;
  }

  // Scripting.
  void SetEncryptResult(envelope::EncryptResult r) {
    std::lock_guard<std::mutex> g(mu_);
    encrypt_result_ = std::move(r);
    encrypt_error_ = absl::OkStatus();
  }
  void SetEncryptError(absl::Status st) {
    std::lock_guard<std::mutex> g(mu_);
    encrypt_error_ = std::move(st);
  }
  void SetDecryptResult(std::string plaintext, std::string node = "https://vault-a.test:8200") {
    std::lock_guard<std::mutex> g(mu_);
    decrypt_plaintext_ = std::move(plaintext);
    decrypt_node_ = std::move(node);
    decrypt_error_ = absl::OkStatus();
  }
  void SetDecryptRequestId(std::string id) {
    std::lock_guard<std::mutex> g(mu_);
    decrypt_request_id_ = std::move(id);
  }
  void SetDecryptError(absl::Status st) {
    std::lock_guard<std::mutex> g(mu_);
    decrypt_error_ = std::move(st);
  }
  void SetHealth(envelope::HealthSnapshot h) {
    std::lock_guard<std::mutex> g(mu_);
    health_ = std::move(h);
  }

  // A gate: while closed, Encrypt and Decrypt block (no sleeps: tests wait for the count of
  // blocked calls, then open it). Open by default.
  void CloseGate() {
    std::lock_guard<std::mutex> g(gate_mu_);
    gate_closed_ = true;
  }
  void OpenGate() {
    {
      std::lock_guard<std::mutex> g(gate_mu_);
      gate_closed_ = false;
    }
    gate_cv_.notify_all();
  }
  // Waits until `n` calls are blocked at the gate; false after `timeout` (a failed test, not a hang).
  bool WaitForBlocked(int n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> g(gate_mu_);
    return gate_cv_.wait_for(g, timeout, [&] { return blocked_ >= n; });
  }
  int blocked() const {
    std::lock_guard<std::mutex> g(gate_mu_);
    return blocked_;
  }

  // Observations.
  std::string last_plaintext() const { std::lock_guard<std::mutex> g(mu_); return last_plaintext_; }
  std::string last_ciphertext() const { std::lock_guard<std::mutex> g(mu_); return last_ciphertext_; }
  std::string last_key_id() const { std::lock_guard<std::mutex> g(mu_); return last_key_id_; }
  std::map<std::string, std::string> last_annotations() const {
    std::lock_guard<std::mutex> g(mu_);
    return last_annotations_;
  }
  Deadline last_deadline() const { std::lock_guard<std::mutex> g(mu_); return last_deadline_; }
  int encrypt_calls() const { std::lock_guard<std::mutex> g(mu_); return encrypt_calls_; }
  int decrypt_calls() const { std::lock_guard<std::mutex> g(mu_); return decrypt_calls_; }
  int health_calls() const { std::lock_guard<std::mutex> g(mu_); return health_calls_; }

 private:
  void WaitAtGate() {
    std::unique_lock<std::mutex> g(gate_mu_);
    if (!gate_closed_) return;
    ++blocked_;
    gate_cv_.notify_all();
    gate_cv_.wait(g, [&] { return !gate_closed_; });
    --blocked_;
  }

  mutable std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool gate_closed_ = false;
  int blocked_ = 0;
  mutable std::mutex mu_;
  envelope::EncryptResult encrypt_result_;
  absl::Status encrypt_error_;
  std::string decrypt_plaintext_;
  std::string decrypt_node_;
  std::string decrypt_request_id_;
  absl::Status decrypt_error_;
  envelope::HealthSnapshot health_{"ok", "transit/k:v1"};
  std::string last_plaintext_, last_ciphertext_, last_key_id_;
  std::map<std::string, std::string> last_annotations_;
  Deadline last_deadline_{};
  int encrypt_calls_ = 0, decrypt_calls_ = 0;
  mutable int health_calls_ = 0;
};

}  // namespace trousseau::fakes
