#include "common/base64.h"

#include <openssl/evp.h>

#include <limits>

namespace trousseau::base64 {

size_t EncodedLength(size_t n) { return 4 * ((n + 2) / 3); }

size_t MaxDecodedLength(size_t n) { return 3 * (n / 4) + 3; }

void EncodeInto(const uint8_t* in, size_t in_len, char* out) {
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out), in, static_cast<int>(in_len));
}

absl::StatusOr<size_t> DecodeInto(std::string_view in, uint8_t* out) {
  if (in.size() % 4 != 0) {
    return absl::InvalidArgumentError("base64: length is not a multiple of 4");
  }
  if (in.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError("base64: input too long");
  }
  if (in.empty()) return 0;
  // EVP_DecodeBlock tolerates leading/trailing whitespace and does not report padding; check
  // the alphabet ourselves so that a malformed value is refused rather than half-decoded.
  size_t pad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    const bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                       (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (c == '=') {
      if (i + 2 < in.size()) return absl::InvalidArgumentError("base64: misplaced padding");
      ++pad;
    } else if (!alpha || pad != 0) {
      return absl::InvalidArgumentError("base64: character outside the alphabet");
    }
  }
  // Canonical only: the bits of the last character that fall past the data must be zero, so every
  // accepted text decodes and re-encodes to itself (found by fuzzing: "...Aa=" was accepted).
  if (pad > 0) {
    const char last = in[in.size() - 1 - pad];
    const int v = (last >= 'A' && last <= 'Z')   ? last - 'A'
                  : (last >= 'a' && last <= 'z') ? last - 'a' + 26
                  : (last >= '0' && last <= '9') ? last - '0' + 52
                  : last == '+'                  ? 62
                                                 : 63;
    if ((v & (pad == 1 ? 0x3 : 0xf)) != 0) {
      return absl::InvalidArgumentError("base64: not canonical (non-zero bits after the data)");
    }
  }
  const int n = EVP_DecodeBlock(out, reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) return absl::InvalidArgumentError("base64: malformed input");
  return static_cast<size_t>(n) - pad;
}

std::string Encode(std::string_view in) {
  std::string out(EncodedLength(in.size()) + 1, '\0');
  EncodeInto(reinterpret_cast<const uint8_t*>(in.data()), in.size(), out.data());
  out.resize(out.size() - 1);
  return out;
}

absl::StatusOr<std::string> Decode(std::string_view in) {
  std::string out(MaxDecodedLength(in.size()), '\0');
  auto n = DecodeInto(in, reinterpret_cast<uint8_t*>(out.data()));
  if (!n.ok()) return n.status();
  out.resize(*n);
  return out;
}

}  // namespace trousseau::base64
