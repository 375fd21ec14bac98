#include "vault/auth/factory.h"

#include <sys/stat.h>

#include "vault/auth/methods.h"
#include "vault/token_file_source.h"

namespace trousseau::vault::auth {
namespace {

// A file re-read after the privilege drop must stay readable by `uid`: owned by it, or readable
// by group or others (group membership is not resolved here; the first login would report it).
absl::Status CheckReadableBy(const std::string& path, std::string_view what, uint32_t uid) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return absl::OkStatus();  // the read reports it
  const bool owner = st.st_uid == uid && (st.st_mode & S_IRUSR);
  const bool group = (st.st_mode & S_IRGRP) != 0;
  const bool other = (st.st_mode & S_IROTH) != 0;
  if (owner || group || other) return absl::OkStatus();
  return absl::FailedPreconditionError(
      std::string(what) + " " + path + " is owned by uid " + std::to_string(st.st_uid) +
      " and not readable by others, but the plugin reads it again at each login after dropping "
      "privileges to uid " + std::to_string(uid) + ": chown it to that uid");
}

}  // namespace

const char* MethodName(config::AuthMethod m) {
  switch (m) {
    case config::AuthMethod::kToken: return "token";
    case config::AuthMethod::kAppRole: return "approle";
    case config::AuthMethod::kCert: return "cert";
    case config::AuthMethod::kJwt: return "jwt";
    case config::AuthMethod::kKubernetes: return "kubernetes";
  }
  return "unknown";
}

absl::Status CheckCredentials(const config::AuthConfig& auth, bool has_client_identity,
                              std::optional<uint32_t> run_as_uid) {
  const std::string key = "vault.auth (method " + std::string(MethodName(auth.method)) + "): ";
  auto fail = [&](const absl::Status& st) {
    return absl::Status(st.code(), key + std::string(st.message()));
  };
  switch (auth.method) {
    case config::AuthMethod::kToken: {
      auto t = ReadCredentialFile(auth.token_file, "token file");
      return t.ok() ? absl::OkStatus() : fail(t.status());
    }
    case config::AuthMethod::kAppRole: {
      if (auto st = CheckPrivateFile(auth.secret_id_file, "secret_id file", run_as_uid); !st.ok()) {
        return fail(st);
      }
      if (auto r = ReadCredentialFile(auth.role_id_file, "role_id file"); !r.ok()) {
        return fail(r.status());
      }
      if (auto s = ReadCredentialFile(auth.secret_id_file, "secret_id file"); !s.ok()) {
        return fail(s.status());
      }
      if (run_as_uid) {
        if (auto st = CheckReadableBy(auth.role_id_file, "role_id file", *run_as_uid); !st.ok()) {
          return fail(st);
        }
      }
      return absl::OkStatus();
    }
    case config::AuthMethod::kCert:
      if (!has_client_identity) {
        return fail(absl::FailedPreconditionError(
            "cert auth needs the mutual-TLS client certificate (vault.tls.client_cert_file and "
            "client_key_file)"));
      }
      return absl::OkStatus();
    case config::AuthMethod::kJwt:
    case config::AuthMethod::kKubernetes: {
      if (auto j = ReadCredentialFile(auth.jwt_file, "jwt file"); !j.ok()) return fail(j.status());
      if (run_as_uid) {
        if (auto st = CheckReadableBy(auth.jwt_file, "jwt file", *run_as_uid); !st.ok()) {
          return fail(st);
        }
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError(key + "unknown method");
}

absl::StatusOr<std::unique_ptr<Authenticator>> MakeAuthenticator(const config::AuthConfig& auth) {
  switch (auth.method) {
    case config::AuthMethod::kToken:
      return absl::InvalidArgumentError("vault.auth.method token has no login");
    case config::AuthMethod::kAppRole:
      return std::unique_ptr<Authenticator>(std::make_unique<AppRoleAuthenticator>(
          auth.mount.empty() ? "approle" : auth.mount, auth.role_id_file, auth.secret_id_file));
    case config::AuthMethod::kCert:
      return std::unique_ptr<Authenticator>(
          std::make_unique<CertAuthenticator>(auth.mount.empty() ? "cert" : auth.mount,
                                              auth.cert_role));
    case config::AuthMethod::kJwt:
      return std::unique_ptr<Authenticator>(std::make_unique<JwtAuthenticator>(
          "jwt", auth.mount.empty() ? "jwt" : auth.mount, auth.role, auth.jwt_file));
    case config::AuthMethod::kKubernetes:
      return std::unique_ptr<Authenticator>(std::make_unique<JwtAuthenticator>(
          "kubernetes", auth.mount.empty() ? "kubernetes" : auth.mount, auth.role,
          auth.jwt_file));
  }
  return absl::InvalidArgumentError("vault.auth.method: unknown method");
}

absl::StatusOr<std::unique_ptr<TokenSource>> MakeTokenSource(const config::VaultConfig& vault,
                                                             HttpTransport& http, Clock& clock) {
  if (vault.auth.method == config::AuthMethod::kToken) {
    auto s = TokenFileSource::Create(vault.auth.token_file);
    if (!s.ok()) return s.status();
    return std::unique_ptr<TokenSource>(std::move(*s));
  }
  auto a = MakeAuthenticator(vault.auth);
  if (!a.ok()) return a.status();
  LifecycleOptions opts;
  opts.request_timeout = vault.request_timeout;
  return std::unique_ptr<TokenSource>(
      std::make_unique<LoginTokenSource>(std::move(*a), http, clock, std::move(opts)));
}

}  // namespace trousseau::vault::auth
