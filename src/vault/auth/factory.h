// Builds the TokenSource the config asks for: a TokenFileSource for method `token`, a
// LoginTokenSource around the method's Authenticator otherwise.
#pragma once

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "config/config.h"
#include "vault/auth/authenticator.h"
#include "vault/auth/login_token_source.h"
#include "vault/http_transport.h"
#include "vault/token_source.h"

namespace trousseau::vault::auth {

// The method's name as written in the config (`token`, `approle`, `cert`, `jwt`, `kubernetes`).
const char* MethodName(config::AuthMethod m);

// Start-time checks of the credential files, so that an impossible state stops the start with one
// line: the token / role_id / jwt file is readable and non-empty; the secret_id file is not
// accessible by group or others (mode & 077 == 0) and, if `run_as_uid` is set (started as root,
// dropping privileges), owned by that uid; cert auth has a client certificate. No network.
absl::Status CheckCredentials(const config::AuthConfig& auth, bool has_client_identity,
                              std::optional<uint32_t> run_as_uid = std::nullopt);

// The Authenticator for a login method (not for `token`).
absl::StatusOr<std::unique_ptr<Authenticator>> MakeAuthenticator(const config::AuthConfig& auth);

// The token source for `vault.auth`. Login sources start their thread (and first login) on the
// first Token() call. `http` and `clock` must outlive the returned source.
absl::StatusOr<std::unique_ptr<TokenSource>> MakeTokenSource(const config::VaultConfig& vault,
                                                             HttpTransport& http, Clock& clock);

}  // namespace trousseau::vault::auth
