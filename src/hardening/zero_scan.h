// Whether a byte range is all zero, fast: ScrubStack's page-wise path asks it for each of the 16
// pages of its 64 KiB frame after every KMS call, and a page no call reached must be read whole.
// A loop 8 bytes a step over every byte made ScrubStack ~52,700 instructions per KMS call, the
// largest single item of our own on the Vault path; 128 bytes a step with SSE2, leaving at the
// first block with a set bit: ~21,400, most of it the cleanse of the pages a call dirtied
// (callgrind, docs/performance.md, change 17).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace trousseau::hardening {

// True iff every byte of [p, p + n) is zero. No alignment needed. Callers that read memory the
// compiler believes dead put an asm barrier before the call (PagedScrub does), so the loads are
// real.
[[gnu::always_inline]] inline bool AllZero(const unsigned char* p, std::size_t n) {
  std::size_t i = 0;
#if defined(__SSE2__)
  constexpr std::size_t kStep = 128;
  for (; i + kStep <= n; i += kStep) {
    const auto* v = reinterpret_cast<const __m128i*>(p + i);
    __m128i acc = _mm_or_si128(_mm_loadu_si128(v + 0), _mm_loadu_si128(v + 1));
    acc = _mm_or_si128(acc, _mm_loadu_si128(v + 2));
    acc = _mm_or_si128(acc, _mm_loadu_si128(v + 3));
    acc = _mm_or_si128(acc, _mm_loadu_si128(v + 4));
    acc = _mm_or_si128(acc, _mm_loadu_si128(v + 5));
    acc = _mm_or_si128(acc, _mm_loadu_si128(v + 6));
    acc = _mm_or_si128(acc, _mm_loadu_si128(v + 7));
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(acc, _mm_setzero_si128())) != 0xFFFF) return false;
  }
#endif
  std::uint64_t acc = 0;
  for (; i + sizeof(std::uint64_t) <= n; i += sizeof(std::uint64_t)) {
    std::uint64_t w;
    std::memcpy(&w, p + i, sizeof(w));
    acc |= w;
  }
  for (; i < n; ++i) acc |= p[i];
  return acc == 0;
}

}  // namespace trousseau::hardening
