// nlohmann::json instantiated over a wiping allocator, for the JSON that carries secrets
// (Transit request bodies with base64 plaintext, decrypt answers, login answers).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "hardening/secret_buffer.h"
#include "hardening/wiping_allocator.h"

namespace trousseau::vault {

using SecretJson = nlohmann::basic_json<std::map, std::vector, WipingString, bool, std::int64_t,
                                        std::uint64_t, double, WipingAllocator>;

// Serialises into a SecretBuffer; intermediate strings are wiped when freed.
SecretBuffer DumpSecret(const SecretJson& j);

// Parses without throwing; the error message describes the syntax problem, never the text.
absl::StatusOr<SecretJson> ParseSecret(const SecretBuffer& text);

// Vault's {"errors": ["..."]} joined with "; ", sanitised to printable ASCII and capped, for
// error messages. Returns "" if the body has no such list.
std::string VaultErrors(const SecretBuffer& body);

}  // namespace trousseau::vault
