// Standard base64 (RFC 4648 with padding) over OpenSSL's EVP block coder, which BoringSSL also
// has. These work on caller-owned memory so that secret text can live in a SecretBuffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace trousseau::base64 {

// Length of the encoding of n bytes, without a terminating NUL.
size_t EncodedLength(size_t n);
// Upper bound of the decoded length of an encoding of n characters.
size_t MaxDecodedLength(size_t n);

// Writes EncodedLength(in_len) characters plus a NUL to out (out must hold EncodedLength+1).
void EncodeInto(const uint8_t* in, size_t in_len, char* out);

// Decodes strictly: rejects characters outside the alphabet, bad padding and lengths that are
// not a multiple of 4. Returns the decoded length; out must hold MaxDecodedLength(in.size()).
absl::StatusOr<size_t> DecodeInto(std::string_view in, uint8_t* out);

// Convenience for non-secret data (pins, test vectors).
std::string Encode(std::string_view in);
absl::StatusOr<std::string> Decode(std::string_view in);

}  // namespace trousseau::base64
