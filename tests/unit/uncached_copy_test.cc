// copyUncached: memcpy's result for every length and alignment around its line-sized body, and
// nothing written outside the destination.
#include "core/uncached_copy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace bccl {
namespace {

TEST(UncachedCopy, CopiesLikeMemcpyAtEveryAlignmentAndLength) {
  constexpr size_t kGuard = 64;
  std::vector<unsigned char> src(512 + 64), dst(512 + 64 + 2 * kGuard);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i * 7 + 3);
  for (size_t srcOff = 0; srcOff < 64; srcOff += 13)
    for (size_t dstOff = 0; dstOff < 64; ++dstOff)
      for (size_t len : {0, 1, 15, 16, 63, 64, 65, 127, 128, 200, 511}) {
        std::fill(dst.begin(), dst.end(), 0xEE);
        copyUncached(dst.data() + kGuard + dstOff, src.data() + srcOff, len);
        for (size_t i = 0; i < dst.size(); ++i) {
          const bool inside = i >= kGuard + dstOff && i < kGuard + dstOff + len;
          const unsigned char want = inside ? src[srcOff + i - kGuard - dstOff] : 0xEE;
          ASSERT_EQ(dst[i], want) << "byte " << i << " copying " << len << " bytes from offset "
                                  << srcOff << " to offset " << dstOff;
        }
      }
}

TEST(UncachedCopy, CopiesALargeBuffer) {
  std::vector<uint32_t> src(3 << 20), dst(src.size() + 1, 0);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint32_t>(i * 2654435761u);
  copyUncached(dst.data() + 1, src.data(), src.size() * sizeof(uint32_t));  // misaligned by 4
  EXPECT_EQ(dst[0], 0u);
  for (size_t i = 0; i < src.size(); ++i) ASSERT_EQ(dst[i + 1], src[i]) << i;
}

}  // namespace
}  // namespace bccl
