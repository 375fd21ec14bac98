// Authenticator: one Vault login method (AppRole, TLS certificate, JWT, Kubernetes).
//
// An Authenticator only logs in: it reads its credential files at each login (so a rotated
// secret_id or a refreshed JWT is picked up), posts them to `auth/<mount>/login` and returns the
// token. Renewal, re-login and single-flight live in LoginTokenSource.
//
// Error messages name the method and the mount ("vault auth approle (mount approle): ...") and
// never contain a credential: Vault's own error text is scrubbed of every credential we sent.
#pragma once

#include <chrono>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "hardening/secret_buffer.h"
#include "vault/http_transport.h"

namespace trousseau::vault::auth {

struct LoginResult {
  std::shared_ptr<const SecretBuffer> token;  // auth.client_token
  std::chrono::seconds lease_duration{0};     // auth.lease_duration; 0 means "does not expire"
  bool renewable = false;                     // auth.renewable
};

class Authenticator {
 public:
  Authenticator(std::string method, std::string mount)
      : method_(std::move(method)), mount_(std::move(mount)) {}
  virtual ~Authenticator() = default;
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // One login. Reads the credential files now. Never blocks past `deadline` (the transport
  // enforces it).
  virtual absl::StatusOr<LoginResult> Login(HttpTransport& http, Deadline deadline) = 0;

  const std::string& method() const { return method_; }  // "approle", "cert", "jwt", "kubernetes"
  const std::string& mount() const { return mount_; }    // "approle" for auth/approle
  // "approle login at auth/approle": for logs and the start line.
  std::string Describe() const { return method_ + " login at auth/" + mount_; }
  // Prefix of every error message: "vault auth approle (mount approle)".
  std::string Where() const { return "vault auth " + method_ + " (mount " + mount_ + ")"; }

 protected:
  // POST /v1/auth/<mount>/login with `body`, then reads auth.client_token, auth.lease_duration
  // and auth.renewable. Any text from Vault is scrubbed of `secrets` before it reaches a message.
  absl::StatusOr<LoginResult> PostLogin(HttpTransport& http, const SecretBuffer& body,
                                        Deadline deadline,
                                        std::initializer_list<const SecretBuffer*> secrets) const;

 private:
  const std::string method_;
  const std::string mount_;
};

// Replaces every occurrence of each secret (and, for JWT-shaped secrets, of each of its
// dot-separated parts) in `text` with "[redacted]". Secrets shorter than 4 bytes are skipped.
std::string RedactSecrets(std::string text, std::initializer_list<const SecretBuffer*> secrets);

// Vault tokens (and the credentials we send) are printable ASCII without spaces.
bool IsPrintableToken(std::string_view s);

}  // namespace trousseau::vault::auth
