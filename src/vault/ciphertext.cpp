#include "vault/ciphertext.h"

#include <string>
#include <vector>

#include "common/base64.h"

namespace trousseau::vault {

absl::StatusOr<int64_t> ParseCiphertextVersion(std::string_view ct, size_t max_bytes) {
  constexpr std::string_view kPrefix = "vault:v";
  if (ct.empty()) return absl::InvalidArgumentError("ciphertext is empty");
  if (ct.size() > max_bytes) {
    return absl::InvalidArgumentError("ciphertext is " + std::to_string(ct.size()) +
                                      " bytes; the limit is " + std::to_string(max_bytes));
  }
  if (ct.substr(0, kPrefix.size()) != kPrefix) {
    return absl::InvalidArgumentError("ciphertext is not a Vault Transit ciphertext "
                                      "(expected prefix \"vault:v<N>:\")");
  }
  ct.remove_prefix(kPrefix.size());
  int64_t version = 0;
  size_t digits = 0;
  while (digits < ct.size() && ct[digits] >= '0' && ct[digits] <= '9') {
    if (digits >= 9) return absl::InvalidArgumentError("ciphertext key version is out of range");
    version = version * 10 + (ct[digits] - '0');
    ++digits;
  }
  if (digits == 0 || version == 0 || (digits > 1 && ct[0] == '0')) {
    return absl::InvalidArgumentError("ciphertext key version is malformed (expected vault:v<N>:, N >= 1)");
  }
  if (digits >= ct.size() || ct[digits] != ':') {
    return absl::InvalidArgumentError("ciphertext is malformed: no ':' after the key version");
  }
  std::string_view body = ct.substr(digits + 1);
  std::vector<uint8_t> raw(base64::MaxDecodedLength(body.size()));
  auto n = base64::DecodeInto(body, raw.data());
  if (!n.ok()) {
    return absl::InvalidArgumentError("ciphertext payload is not valid base64 (" +
                                      std::string(n.status().message()) + ")");
  }
  if (*n < kMinSealedBytes) {
    return absl::InvalidArgumentError("ciphertext payload is too short to be sealed data");
  }
  return version;
}

}  // namespace trousseau::vault
