// A token read from a file and re-read whenever the file changes (a Vault Agent sidecar
// rewrites it by rename). The check is one stat(2) per request.
#pragma once

#include <mutex>

#include "hardening/secret_file.h"
#include "vault/token_source.h"

namespace trousseau::vault {

class TokenFileSource final : public TokenSource {
 public:
  // Reads the file once now, so a missing or empty token file stops the start.
  static absl::StatusOr<std::unique_ptr<TokenFileSource>> Create(std::string path);

  absl::StatusOr<std::shared_ptr<const SecretBuffer>> Token(Deadline deadline) override;
  void Invalidate(const std::shared_ptr<const SecretBuffer>& token) override;
  std::string Describe() const override { return "token file " + path_; }

 private:
  explicit TokenFileSource(std::string path) : path_(std::move(path)) {}
  absl::Status Reload();

  const std::string path_;
  std::mutex mu_;
  std::shared_ptr<const SecretBuffer> token_;
  FileIdentity identity_;
};

}  // namespace trousseau::vault
