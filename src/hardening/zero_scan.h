// Whether a byte range is all zero, fast: ScrubStack's page-wise path asks it for each of the 16
// pages of its 64 KiB frame after every KMS call, and a page no call reached must be read whole.
// The plain loop (8 bytes a step, the whole page read even when its first word is set) was
// ~27,000 of ScrubStack's ~52,500 instructions per call (callgrind); 128 bytes a step with SSE2,
// leaving at the first block with a set bit, brings ScrubStack to ~21,600 (docs/performance.md,
// change 17).
//
// The scan copies the dead frame into registers: with SSE2, whole 16-byte blocks of it into
// xmm registers, which the x86-64 ABI lets every function clobber, so no callee restores them
// and they keep those bytes after ScrubStack returns until something overwrites them. Whatever
// spills vector registers next writes them back below sp, into the area just wiped: TSan's
// __tsan_trace_switch_thunk does (it stores all 16 at sp-0x100 when a thread's trace part
// fills), which is how 32 bytes of a dead frame (xmm1, xmm2 of the -O0 scan) survived
// hardening_test's "ScrubStack on a worker thread" under TSan; in a release build a lazy PLT
// binding (_dl_runtime_resolve_xsave), a signal frame or a varargs call can do the same, and a
// core dump holds the registers themselves. So the caller clears them when its scan is done
// (ClearScanRegisters, PagedScrub's last step); hardening_test checks it in every build.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__) && defined(__x86_64__)
#include <emmintrin.h>
#define TROUSSEAU_ZERO_SCAN_SSE2 1
#endif

namespace trousseau::hardening {

// True iff every byte of [p, p + n) is zero. No alignment needed. Callers that read memory the
// compiler believes dead put an asm barrier before the call (PagedScrub does), so the loads are
// real; callers that read secrets call ClearScanRegisters when done.
[[gnu::always_inline]] inline bool AllZero(const unsigned char* p, std::size_t n) {
  std::size_t i = 0;
#if defined(TROUSSEAU_ZERO_SCAN_SSE2)
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

// Zeroes the registers a scan can leave bytes of the scanned memory in: every vector register
// and the call-clobbered general ones (the callee-saved ones are restored to the caller's values
// on return anyway). Declared clobbered, so the compiler keeps nothing live in them across it.
// ~25 instructions. An optimised build keeps the scan in registers; an -O0 build (debug, the
// sanitizer presets) also spills its temporaries to the caller's own frame, below the area it
// scans, which this cannot reach.
[[gnu::always_inline]] inline void ClearScanRegisters() {
#if defined(__x86_64__)
  __asm__ __volatile__(
      "pxor %%xmm0, %%xmm0\n\tpxor %%xmm1, %%xmm1\n\tpxor %%xmm2, %%xmm2\n\t"
      "pxor %%xmm3, %%xmm3\n\tpxor %%xmm4, %%xmm4\n\tpxor %%xmm5, %%xmm5\n\t"
      "pxor %%xmm6, %%xmm6\n\tpxor %%xmm7, %%xmm7\n\tpxor %%xmm8, %%xmm8\n\t"
      "pxor %%xmm9, %%xmm9\n\tpxor %%xmm10, %%xmm10\n\tpxor %%xmm11, %%xmm11\n\t"
      "pxor %%xmm12, %%xmm12\n\tpxor %%xmm13, %%xmm13\n\tpxor %%xmm14, %%xmm14\n\t"
      "pxor %%xmm15, %%xmm15\n\t"
      "xorl %%eax, %%eax\n\txorl %%ecx, %%ecx\n\txorl %%edx, %%edx\n\t"
      "xorl %%esi, %%esi\n\txorl %%edi, %%edi\n\txorl %%r8d, %%r8d\n\t"
      "xorl %%r9d, %%r9d\n\txorl %%r10d, %%r10d\n\txorl %%r11d, %%r11d"
      :
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
        "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "rax", "rcx", "rdx", "rsi",
        "rdi", "r8", "r9", "r10", "r11", "cc");
#endif
}

}  // namespace trousseau::hardening
