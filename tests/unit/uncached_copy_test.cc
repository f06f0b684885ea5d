// copyUncached: memcpy's result for every length and alignment around its line-sized body, and
// nothing written outside the destination.
#include "core/uncached_copy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "support/copy_check.h"

namespace bccl {
namespace {

TEST(UncachedCopy, CopiesLikeMemcpyAtEveryAlignmentAndLength) {
  bccltest::ExpectCopiesLikeMemcpy([](void* d, const void* s, size_t n) { copyUncached(d, s, n); });
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
