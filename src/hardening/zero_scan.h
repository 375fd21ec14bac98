// Whether a byte range is all zero, fast: ScrubStack's page-wise path asks it for each of the 16
// pages of its 64 KiB frame after every KMS call, and a page no call reached must be read whole.
// A loop 8 bytes a step over every byte made ScrubStack ~52,700 instructions per KMS call, the
// largest single item of our own on the Vault path; a block at a time, leaving at the first
// block with a set bit: ~21,400 (measured with a 128-byte SSE2 step, since replaced by the
// portable 64-byte one below), most of it the cleanse of the pages a call dirtied (callgrind,
// docs/performance.md, change 17).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>


namespace trousseau::hardening {

// True iff every byte of [p, p + n) is zero. No alignment needed. Callers that read memory the
// compiler believes dead put an asm barrier before the call (PagedScrub does), so the loads are
// real.
[[gnu::always_inline]] inline bool AllZero(const unsigned char* p, std::size_t n) {
  // 64 bytes a step in plain 8-byte words (the compiler vectorises it where it can), leaving at
  // the first block with a set bit. Hand-written SSE2 here was wrong under TSan: a dead stack
  // frame's bytes read as zero in hardening_test's ScrubStack case and 40 of them survived.
  std::size_t i = 0;
  constexpr std::size_t kWords = 8;
  for (; i + kWords * sizeof(std::uint64_t) <= n; i += kWords * sizeof(std::uint64_t)) {
    std::uint64_t acc = 0;
    for (std::size_t k = 0; k < kWords; ++k) {
      std::uint64_t w;
      std::memcpy(&w, p + i + k * sizeof(w), sizeof(w));
      acc |= w;
    }
    if (acc != 0) return false;
  }
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
