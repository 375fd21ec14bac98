// The Transit ciphertext format, checked before any network call:
//   "vault:v<version>:<standard base64 of nonce || ciphertext || tag>"
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace trousseau::vault {

inline constexpr size_t kMaxCiphertextBytes = 1024;  // the KMS v2 limit
inline constexpr size_t kMaxV1CiphertextBytes = 128 * 1024;  // 64 KiB plaintext, wrapped
inline constexpr size_t kMinSealedBytes = 12 + 16;   // AEAD nonce + tag

// Returns the key version, or INVALID_ARGUMENT with a message naming what is wrong.
// `max_bytes` is the caller's API limit (1024 for KMS v2).
absl::StatusOr<int64_t> ParseCiphertextVersion(std::string_view ciphertext,
                                               size_t max_bytes = kMaxCiphertextBytes);

}  // namespace trousseau::vault
