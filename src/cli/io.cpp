#include "cli/io.h"

#include <errno.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace trousseau::cli {

absl::Status ReadStdin(size_t max_bytes, SecretBuffer& out) {
  out.clear();
  out.reserve(4096);
  for (;;) {
    if (out.capacity() - out.size() < 1024) out.reserve(out.capacity() * 2);
    const size_t room = out.capacity() - out.size();
    const size_t at = out.size();
    out.resize(out.capacity());
    const ssize_t n = ::read(STDIN_FILENO, out.data() + at, room);
    if (n < 0 && errno == EINTR) {
      out.resize(at);
      continue;
    }
    if (n < 0) {
      const int err = errno;
      out.clear();
      return absl::InvalidArgumentError(std::string("cannot read stdin: ") + std::strerror(err));
    }
    out.resize(at + static_cast<size_t>(n));
    if (n == 0) return absl::OkStatus();
    if (out.size() > max_bytes) {
      out.clear();
      return absl::InvalidArgumentError("stdin holds more than " + std::to_string(max_bytes) +
                                        " bytes, the most this API accepts");
    }
  }
}

absl::Status WriteStdout(std::string_view bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(STDOUT_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError(std::string("cannot write stdout: ") + std::strerror(errno));
    p += n;
    left -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

void WipeString(std::string& s) { SecureWipe(s.data(), s.size()); }

}  // namespace trousseau::cli
