// The two token self-service calls the lifecycle needs: lookup-self (TTL and renewability after
// a login) and renew-self. Messages never contain the token.
#pragma once

#include <chrono>
#include <memory>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "hardening/secret_buffer.h"
#include "vault/http_transport.h"

namespace trousseau::vault::auth {

struct TokenInfo {
  std::chrono::seconds ttl{0};  // remaining lifetime; 0 means it does not expire
  bool renewable = false;
  // lookup-self only: the token's explicit max TTL (data.explicit_max_ttl) in seconds from its
  // creation; 0 when it has none (a role's token_max_ttl is not shown here: it shows up as a
  // renewal granting less than asked).
  std::chrono::seconds explicit_max_ttl{0};
  // lookup-self only: the TTL the token was created with (data.creation_ttl), 0 if absent; the
  // increment to ask for when renewing (the remaining `ttl` shrinks with the token's age).
  std::chrono::seconds creation_ttl{0};
  // lookup-self only: data.expire_time is set. Vault truncates `ttl` to whole seconds, so a
  // token in its last second shows ttl 0 like one that never expires; this tells them apart.
  bool has_expire_time = false;
};

// GET /v1/auth/token/lookup-self -> data.ttl, data.renewable, data.explicit_max_ttl.
absl::StatusOr<TokenInfo> LookupSelf(HttpTransport& http,
                                     const std::shared_ptr<const SecretBuffer>& token,
                                     Deadline deadline);

// POST /v1/auth/token/renew-self {"increment": N} -> auth.lease_duration, auth.renewable.
// A 403 (revoked, expired or not renewable by policy) is PERMISSION_DENIED; no answer or a 5xx
// is UNAVAILABLE.
absl::StatusOr<TokenInfo> RenewSelf(HttpTransport& http,
                                    const std::shared_ptr<const SecretBuffer>& token,
                                    std::chrono::seconds increment, Deadline deadline);

}  // namespace trousseau::vault::auth
