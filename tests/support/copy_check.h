// The check the copy routines' tests share: `copy` must give memcpy's bytes for every length and
// alignment around 8-, 16- and 64-byte steps, and write nothing outside the destination.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace bccltest {

template <typename Copy>
void ExpectCopiesLikeMemcpy(Copy copy) {
  constexpr size_t kGuard = 64;
  std::vector<unsigned char> src(512 + 64), dst(512 + 64 + 2 * kGuard);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 7 + 3);
  for (size_t srcOff = 0; srcOff < 64; srcOff += 13)
    for (size_t dstOff = 0; dstOff < 64; ++dstOff)
      for (size_t len : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 71, 127, 128, 200, 511}) {
        std::fill(dst.begin(), dst.end(), 0xEE);
        copy(dst.data() + kGuard + dstOff, src.data() + srcOff, len);
        for (size_t i = 0; i < dst.size(); ++i) {
          const bool inside = i >= kGuard + dstOff && i < kGuard + dstOff + len;
          const unsigned char want = inside ? src[srcOff + i - kGuard - dstOff] : 0xEE;
          ASSERT_EQ(dst[i], want) << "byte " << i << " copying " << len << " bytes from offset "
                                  << srcOff << " to offset " << dstOff;
        }
      }
}

}  // namespace bccltest
