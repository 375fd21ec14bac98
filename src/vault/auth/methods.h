// The login methods. Each reads its credential files at every login, never keeps a credential
// in memory between logins, and builds its request body as SecretJson dumped to a SecretBuffer.
#pragma once

#include <optional>
#include <string>

#include "vault/auth/authenticator.h"

namespace trousseau::vault::auth {

inline constexpr size_t kMaxCredentialBytes = 16 * 1024;

// Reads a credential file into a SecretBuffer, trimmed; empty or non-printable is an error.
// `what` names it in messages ("secret_id file").
absl::StatusOr<SecretBuffer> ReadCredentialFile(const std::string& path, std::string_view what);

// A secret file must not be readable (or writable) by group or others: mode & 077 == 0.
// If `run_as_uid` is set, the file must also be owned by that uid (the plugin re-reads it after
// dropping privileges, and only the owner can read a 0400/0600 file).
absl::Status CheckPrivateFile(const std::string& path, std::string_view what,
                              std::optional<uint32_t> run_as_uid = std::nullopt);

// POST auth/<mount>/login {"role_id", "secret_id"}; both read from files at each login. A
// secret_id file readable by group or others is refused at every login, not only at start.
class AppRoleAuthenticator final : public Authenticator {
 public:
  AppRoleAuthenticator(std::string mount, std::string role_id_file, std::string secret_id_file)
      : Authenticator("approle", std::move(mount)),
        role_id_file_(std::move(role_id_file)),
        secret_id_file_(std::move(secret_id_file)) {}
  absl::StatusOr<LoginResult> Login(HttpTransport& http, Deadline deadline) override;

 private:
  const std::string role_id_file_;
  const std::string secret_id_file_;
};

// POST auth/<mount>/login {"name": role} (or {}): the identity is the mutual-TLS client
// certificate the transport already presents.
class CertAuthenticator final : public Authenticator {
 public:
  CertAuthenticator(std::string mount, std::string role)
      : Authenticator("cert", std::move(mount)), role_(std::move(role)) {}
  absl::StatusOr<LoginResult> Login(HttpTransport& http, Deadline deadline) override;

 private:
  const std::string role_;
};

// POST auth/<mount>/login {"role", "jwt"} with the JWT read from a file at each login. Serves
// both the jwt method and the kubernetes method (method "kubernetes": Vault validates the JWT
// with the cluster's TokenReview API; see docs/auth.md for the static-pod caveat).
class JwtAuthenticator final : public Authenticator {
 public:
  JwtAuthenticator(std::string method, std::string mount, std::string role, std::string jwt_file)
      : Authenticator(std::move(method), std::move(mount)),
        role_(std::move(role)),
        jwt_file_(std::move(jwt_file)) {}
  absl::StatusOr<LoginResult> Login(HttpTransport& http, Deadline deadline) override;

 private:
  const std::string role_;
  const std::string jwt_file_;
};

}  // namespace trousseau::vault::auth
