// Vault/OpenBao Transit operations on one key, with Vault's answers mapped to status codes
// whose messages name the cause and never carry a secret.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "vault/http_transport.h"
#include "vault/token_source.h"

namespace trousseau::vault {

struct KeyInfo {
  int64_t latest_version = 0;
  int64_t min_decryption_version = 0;
  int64_t min_encryption_version = 0;
  std::string type;
  // The `keys` map: version -> creation time as Vault wrote it (Unix seconds for symmetric keys,
  // the RFC 3339 `creation_time` for asymmetric ones). Compared, never interpreted.
  std::map<int64_t, std::string> created;
};

// Vault's request_id is a UUID; anything longer or with other characters is not kept.
inline constexpr size_t kMaxRequestIdBytes = 64;

struct Wrapped {
  std::string ciphertext;  // "vault:vN:..."
  int64_t version = 0;     // N, read from the ciphertext itself
  std::string node;        // which Vault address served it
  std::string request_id;  // Vault's request_id of the answer, for the audit record ("" if none)
};

struct Unwrapped {
  SecretBuffer plaintext;
  std::string node;
  std::string request_id;  // Vault's request_id of the answer ("" if none)
};

// One item of a Transit batch_input (transit_batch.cpp). The plaintext/ciphertext views must
// stay valid for the call. associated_data is raw bytes, sent base64-encoded when non-empty.
struct EncryptItem {
  std::string_view plaintext;
  int64_t key_version = 0;  // 0: latest. Sent per item: OpenBao ignores a top-level key_version
                            // when batch_input is given.
  std::string associated_data;
};
struct DecryptItem {
  std::string_view ciphertext;
  std::string associated_data;
};

class TransitClient {
 public:
  TransitClient(HttpTransport& http, TokenSource& tokens, std::string mount, std::string key);

  // key_version 0 means "latest". Passing the version Status reports keeps the key_id that
  // Encrypt returns equal to the one Status returns, even during a rotation.
  // `associated_data` (raw bytes, sent base64) is authenticated by AEAD key types and not stored;
  // empty: none sent (docs/formats.md, binding).
  absl::StatusOr<Wrapped> Encrypt(std::string_view plaintext, int64_t key_version,
                                  Deadline deadline, std::string_view associated_data = {});
  absl::StatusOr<Unwrapped> Decrypt(std::string_view ciphertext, Deadline deadline,
                                    std::string_view associated_data = {});
  absl::StatusOr<KeyInfo> ReadKey(Deadline deadline);

  // One batch_input call (transit_batch.cpp). The outer status fails the whole call (no answer,
  // 403, 5xx, a 400 without per-item results, a malformed or out-of-order answer); otherwise
  // there is one result per item, in input order, each with its own error mapped to a code.
  absl::StatusOr<std::vector<absl::StatusOr<Wrapped>>> EncryptBatch(
      const std::vector<EncryptItem>& items, Deadline deadline);
  absl::StatusOr<std::vector<absl::StatusOr<Unwrapped>>> DecryptBatch(
      const std::vector<DecryptItem>& items, Deadline deadline);

  const std::string& mount() const { return mount_; }
  const std::string& key() const { return key_; }

 private:
  // Sends with the current token; on 403 invalidates it and retries once with a fresh one.
  absl::StatusOr<HttpResponse> Call(HttpRequest::Method method, const std::string& path,
                                    const SecretBuffer* body, Deadline deadline);
  absl::Status MapHttpError(const HttpResponse& resp, std::string_view op) const;
  // The part EncryptBatch and DecryptBatch share (defined and used only in transit_batch.cpp).
  template <typename Out, typename Item, typename Fill, typename Read>
  absl::StatusOr<std::vector<absl::StatusOr<Out>>> PostBatch(std::string_view op,
                                                             const std::vector<Item>& items,
                                                             Fill fill, Read read, Deadline deadline);

  HttpTransport& http_;
  TokenSource& tokens_;
  const std::string mount_;
  const std::string key_;
};

}  // namespace trousseau::vault
