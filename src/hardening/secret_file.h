// Reading files that hold secrets straight into a SecretBuffer (no intermediate std::string).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "hardening/secret_buffer.h"

namespace trousseau {

struct FileIdentity {
  unsigned long long dev = 0, ino = 0;
  long long size = 0, mtime_ns = 0, ctime_ns = 0;
  bool operator==(const FileIdentity&) const = default;
};

// Reads at most max_bytes (a longer file is an error). Errors name the path and the errno text.
absl::StatusOr<SecretBuffer> ReadSecretFile(const std::string& path, size_t max_bytes,
                                            FileIdentity* identity = nullptr);

// stat(2) summary used to notice that a file changed (rename-over or rewrite).
absl::StatusOr<FileIdentity> StatFile(const std::string& path);

// Non-secret files (certificates, config).
absl::StatusOr<std::string> ReadTextFile(const std::string& path, size_t max_bytes);

// Removes leading and trailing ASCII whitespace in place (tokens are often written with "\n").
void TrimSecret(SecretBuffer& buffer);

}  // namespace trousseau
