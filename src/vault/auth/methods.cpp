#include "vault/auth/methods.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "hardening/secret_file.h"
#include "vault/secret_json.h"

namespace trousseau::vault::auth {
namespace {

WipingString ToWiping(const SecretBuffer& b) { return WipingString(b.chars(), b.size()); }

std::string Octal(unsigned mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", mode & 07777);
  return buf;
}

}  // namespace

absl::StatusOr<SecretBuffer> ReadCredentialFile(const std::string& path, std::string_view what) {
  auto buf = ReadSecretFile(path, kMaxCredentialBytes);
  if (!buf.ok()) {
    return absl::Status(buf.status().code(),
                        std::string(what) + ": " + std::string(buf.status().message()));
  }
  TrimSecret(*buf);
  if (buf->empty()) {
    return absl::FailedPreconditionError(std::string(what) + " is empty: " + path);
  }
  if (!IsPrintableToken(buf->view())) {
    return absl::FailedPreconditionError(std::string(what) +
                                         " holds spaces or non-printable bytes: " + path);
  }
  return std::move(*buf);
}

absl::Status CheckPrivateFile(const std::string& path, std::string_view what,
                              std::optional<uint32_t> run_as_uid) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    std::string msg = std::string(what) + ": cannot stat " + path + ": " + std::strerror(err);
    if (err == ENOENT) return absl::NotFoundError(msg);
    return absl::FailedPreconditionError(msg);
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(std::string(what) + " is not a regular file: " + path);
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(
        std::string(what) + " " + path + " has mode " + Octal(st.st_mode) +
        ": it must not be accessible by group or others (chmod 0400 or 0600)");
  }
  if (run_as_uid && st.st_uid != *run_as_uid) {
    return absl::FailedPreconditionError(
        std::string(what) + " " + path + " is owned by uid " + std::to_string(st.st_uid) +
        " but the plugin reads it again after dropping privileges to uid " +
        std::to_string(*run_as_uid) + ": chown it to that uid (mode 0400)");
  }
  return absl::OkStatus();
}

absl::StatusOr<LoginResult> AppRoleAuthenticator::Login(HttpTransport& http, Deadline deadline) {
  if (auto st = CheckPrivateFile(secret_id_file_, "secret_id file"); !st.ok()) {
    return absl::Status(st.code(), Where() + ": " + std::string(st.message()));
  }
  auto role_id = ReadCredentialFile(role_id_file_, "role_id file");
  if (!role_id.ok()) {
    return absl::Status(role_id.status().code(),
                        Where() + ": " + std::string(role_id.status().message()));
  }
  auto secret_id = ReadCredentialFile(secret_id_file_, "secret_id file");
  if (!secret_id.ok()) {
    return absl::Status(secret_id.status().code(),
                        Where() + ": " + std::string(secret_id.status().message()));
  }
  SecretBuffer body;
  {
    SecretJson req = SecretJson::object();
    req["role_id"] = ToWiping(*role_id);
    req["secret_id"] = ToWiping(*secret_id);
    body = DumpSecret(req);
  }
  return PostLogin(http, body, deadline, {&*role_id, &*secret_id});
}

absl::StatusOr<LoginResult> CertAuthenticator::Login(HttpTransport& http, Deadline deadline) {
  SecretBuffer body;
  {
    SecretJson req = SecretJson::object();
    if (!role_.empty()) req["name"] = WipingString(role_.data(), role_.size());
    body = DumpSecret(req);
  }
  return PostLogin(http, body, deadline, {});
}

absl::StatusOr<LoginResult> JwtAuthenticator::Login(HttpTransport& http, Deadline deadline) {
  auto jwt = ReadCredentialFile(jwt_file_, "jwt file");
  if (!jwt.ok()) {
    return absl::Status(jwt.status().code(), Where() + ": " + std::string(jwt.status().message()));
  }
  SecretBuffer body;
  {
    SecretJson req = SecretJson::object();
    req["role"] = WipingString(role_.data(), role_.size());
    req["jwt"] = ToWiping(*jwt);
    body = DumpSecret(req);
  }
  return PostLogin(http, body, deadline, {&*jwt});
}

}  // namespace trousseau::vault::auth
