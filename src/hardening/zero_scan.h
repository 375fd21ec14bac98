// Whether a byte range is all zero: ScrubStack's page-wise path asks it for each of the 16 pages
// of its 64 KiB frame after every KMS call (~27,000 of ScrubStack's ~52,500 instructions per
// call, callgrind). An SSE2 version with an early exit brought ScrubStack to ~21,600 (with the
// same OPENSSL_cleanse count in the release build), but under TSan it let 40 bytes of a dead
// frame survive hardening_test's "ScrubStack on a worker thread" case, every time, while this
// loop passes there. The cause was not found, so this plain loop (ScrubStack's since change 16)
// stays; docs/performance.md, change 17.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace trousseau::hardening {

// True iff every byte of [p, p + n) is zero. No alignment needed. Callers that read memory the
// compiler believes dead put an asm barrier before the call (PagedScrub does), so the loads are
// real.
[[gnu::always_inline]] inline bool AllZero(const unsigned char* p, std::size_t n) {
  std::uint64_t acc = 0;
  std::size_t i = 0;
  for (; i + sizeof(std::uint64_t) <= n; i += sizeof(std::uint64_t)) {
    std::uint64_t w;
    std::memcpy(&w, p + i, sizeof(w));
    acc |= w;
  }
  for (; i < n; ++i) acc |= p[i];
  return acc == 0;
}

}  // namespace trousseau::hardening
