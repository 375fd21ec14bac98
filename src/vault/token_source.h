// Where the Vault token comes from. Token file now; login methods (AppRole, cert, JWT,
// Kubernetes) implement the same seam and own renewal.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "hardening/secret_buffer.h"

namespace trousseau::vault {

class TokenSource {
 public:
  virtual ~TokenSource() = default;
  // The token to use now. May block (login) but never past `deadline`.
  virtual absl::StatusOr<std::shared_ptr<const SecretBuffer>> Token(Deadline deadline) = 0;
  // Vault refused `token` (403): forget it so the next Token() re-reads or logs in again.
  virtual void Invalidate(const std::shared_ptr<const SecretBuffer>& token) = 0;
  // Non-secret description for logs, e.g. "token file /etc/trousseau/token".
  virtual std::string Describe() const = 0;
};

}  // namespace trousseau::vault
