// Shared by the fuzz targets: invariant checks that abort (a finding for libFuzzer, a failed test
// for the ctest corpus replay) and small predicates on error messages.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/status.h"

#define FUZZ_CHECK(cond, what)                                                          \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "FUZZ INVARIANT FAILED at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                   std::string(what).c_str(), #cond);                                  \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

namespace trousseau::fuzz {

// Debian's Abseil has its own string_view: messages as std::string.
inline std::string Msg(const absl::Status& st) { return std::string(st.message()); }

// A message that goes to logs and to kube-apiserver: one line of printable ASCII, bounded.
inline bool IsPrintableLine(std::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// Every error status must say something, on one printable line of sane length.
inline void CheckErrorMessage(const absl::Status& st, std::string_view where,
                              size_t max_len = 4096) {
  if (st.ok()) return;
  const std::string m = Msg(st);
  FUZZ_CHECK(!m.empty(), std::string(where) + ": error status with an empty message");
  FUZZ_CHECK(IsPrintableLine(m),
             std::string(where) + ": message not printable ASCII: " + m.substr(0, 200));
  FUZZ_CHECK(m.size() <= max_len, std::string(where) + ": message of " + std::to_string(m.size()) +
                                      " bytes");
}

// `secret` (if long enough to be recognisable) must not appear in `text`.
inline bool Leaks(std::string_view text, std::string_view secret, size_t min_len = 8) {
  return secret.size() >= min_len && text.find(secret) != std::string_view::npos;
}

}  // namespace trousseau::fuzz
