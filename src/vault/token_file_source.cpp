#include "vault/token_file_source.h"

#include "observability/log.h"

namespace trousseau::vault {
namespace {
constexpr size_t kMaxTokenBytes = 16 * 1024;

// Vault tokens are printable ASCII; anything else means the wrong file.
bool PrintableToken(const SecretBuffer& t) {
  for (size_t i = 0; i < t.size(); ++i) {
    const uint8_t c = t.data()[i];
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}
}  // namespace

absl::StatusOr<std::unique_ptr<TokenFileSource>> TokenFileSource::Create(std::string path) {
  std::unique_ptr<TokenFileSource> s(new TokenFileSource(std::move(path)));
  std::lock_guard<std::mutex> lock(s->mu_);
  absl::Status st = s->Reload();
  if (!st.ok()) return absl::Status(st.code(), "vault.auth.token_file: " + std::string(st.message()));
  return s;
}

absl::Status TokenFileSource::Reload() {
  FileIdentity id;
  auto buf = ReadSecretFile(path_, kMaxTokenBytes, &id);
  if (!buf.ok()) return buf.status();
  TrimSecret(*buf);
  if (buf->empty()) return absl::FailedPreconditionError("token file is empty: " + path_);
  if (!PrintableToken(*buf)) {
    return absl::FailedPreconditionError("token file holds non-printable bytes: " + path_);
  }
  token_ = std::make_shared<const SecretBuffer>(std::move(*buf));
  identity_ = id;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const SecretBuffer>> TokenFileSource::Token(Deadline /*deadline*/) {
  // The common case (the file as loaded) takes its stat before the lock: under it, every
  // concurrent request queued behind one thread's syscall (futex waits seen at c=16). Anything
  // else is decided on a second stat under the lock, as before, so a stale first look (another
  // thread reloaded meanwhile) never loads or logs a change twice.
  auto id = StatFile(path_);
  std::lock_guard<std::mutex> lock(mu_);
  if (id.ok() && (*id == identity_) && token_) return token_;
  id = StatFile(path_);
  if (id.ok() && (*id == identity_) && token_) return token_;
  if (!id.ok()) {
    // Keep serving with the token we have: a sidecar may be mid-rename.
    if (token_) {
      log::Warn("auth.token_file", "cannot stat token file; keeping the current token",
                {{"path", path_}, {"error", std::string(id.status().message())}});
      return token_;
    }
    return absl::UnavailableError("vault token: " + std::string(id.status().message()));
  }
  absl::Status st = Reload();
  if (!st.ok()) {
    if (token_) {
      log::Warn("auth.token_file", "cannot re-read token file; keeping the current token",
                {{"path", path_}, {"error", std::string(st.message())}});
      return token_;
    }
    return absl::UnavailableError("vault token: " + std::string(st.message()));
  }
  log::Info("auth.token_file", "token file changed; new token loaded", {{"path", path_}});
  return token_;
}

void TokenFileSource::Invalidate(const std::shared_ptr<const SecretBuffer>& token) {
  std::lock_guard<std::mutex> lock(mu_);
  // Force a re-read on the next call, but only if nobody replaced the token meanwhile.
  if (token_ == token) identity_ = FileIdentity{};
}

}  // namespace trousseau::vault
