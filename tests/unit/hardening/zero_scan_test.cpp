// hardening::AllZero, the test ScrubStack's page-wise path runs on each page of its frame: a
// set byte anywhere in the range (any alignment, any length, the SIMD blocks and the tails) is
// seen, a set byte just outside it is not.
#include "hardening/zero_scan.h"

#include <catch2/catch.hpp>
#include <vector>

namespace trousseau::hardening {
namespace {

TEST_CASE("AllZero sees one set byte anywhere in the range and none outside it", "[zero_scan]") {
  std::vector<unsigned char> mem(4096 + 64 + 32, 0);
  for (size_t offset : {size_t{0}, size_t{1}, size_t{13}}) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{127},
                     size_t{128}, size_t{129}, size_t{255}, size_t{256}, size_t{1000},
                     size_t{4095}, size_t{4096}}) {
      unsigned char* p = mem.data() + 16 + offset;
      INFO("offset " << offset << " n " << n);
      CHECK(AllZero(p, n));
      // Just before and just after the range: not part of it.
      p[-1] = 0xFF;
      p[n] = 0xFF;
      CHECK(AllZero(p, n));
      p[-1] = 0;
      p[n] = 0;
      for (size_t j = 0; j < n; ++j) {
        for (unsigned char v : {static_cast<unsigned char>(1), static_cast<unsigned char>(0x80)}) {
          p[j] = v;
          if (AllZero(p, n)) FAIL("set byte " << int{v} << " at " << j << " not seen");
          p[j] = 0;
        }
      }
    }
  }
}

}  // namespace
}  // namespace trousseau::hardening
