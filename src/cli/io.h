// stdin/stdout for the encrypt and decrypt commands: input read into a SecretBuffer (never a
// plain std::string), output written with write(2) so no stdio buffer keeps a copy.
#pragma once

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"
#include "hardening/secret_buffer.h"

namespace trousseau::cli {

// Reads all of stdin into `out`. More than `max_bytes` is INVALID_ARGUMENT (nothing kept).
absl::Status ReadStdin(size_t max_bytes, SecretBuffer& out);

// Writes all of `bytes` to stdout.
absl::Status WriteStdout(std::string_view bytes);

// Wipes a std::string's bytes in place (a protobuf field that held a plaintext).
void WipeString(std::string& s);

}  // namespace trousseau::cli
