// copyBulk: every routine gives memcpy's result at every alignment and length around its
// 64-byte and 8-byte steps, writes nothing outside the destination, and the choice can be
// named, measured and overridden.
#include "core/bulk_copy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "support/copy_check.h"

namespace bccl {
namespace {

class BulkCopy : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ASSERT_TRUE(setBulkCopyKernel(GetParam().c_str())); }
  void TearDown() override { setBulkCopyKernel("auto"); }
};

TEST_P(BulkCopy, CopiesLikeMemcpyAtEveryAlignmentAndLength) {
  ASSERT_EQ(std::string(bulkCopyKernel()), GetParam());
  bccltest::ExpectCopiesLikeMemcpy(copyBulk);
}

TEST_P(BulkCopy, CopiesALargeBuffer) {
  std::vector<uint32_t> src((1 << 20) + 3), dst(src.size() + 2, 0);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint32_t>(i * 2654435761u);
  copyBulk(dst.data() + 1, src.data(), src.size() * sizeof(uint32_t));
  EXPECT_EQ(dst[0], 0u);
  EXPECT_EQ(dst.back(), 0u);
  for (size_t i = 0; i < src.size(); ++i) ASSERT_EQ(dst[i + 1], src[i]) << i;
}

std::vector<std::string> Kernels() {
  std::vector<std::string> names;
  for (const char* n : bulkCopyKernels()) names.emplace_back(n);
  return names;
}

INSTANTIATE_TEST_SUITE_P(EveryRoutine, BulkCopy, ::testing::ValuesIn(Kernels()),
                         [](const auto& info) { return info.param; });

TEST(BulkCopyChoice, MeasuredChoiceIsOneOfTheRoutinesAndUnknownNamesAreRefused) {
  ASSERT_FALSE(bulkCopyKernels().empty());
  EXPECT_STREQ(bulkCopyKernels()[0], "memcpy");
  ASSERT_TRUE(setBulkCopyKernel("auto"));
  const std::string chosen = bulkCopyKernel();
  bool known = false;
  for (const char* n : bulkCopyKernels()) known = known || chosen == n;
  EXPECT_TRUE(known) << chosen;
  EXPECT_FALSE(setBulkCopyKernel("bogus"));
  EXPECT_FALSE(setBulkCopyKernel(nullptr));
  EXPECT_EQ(std::string(bulkCopyKernel()), chosen);  // a refused name changes nothing
}

}  // namespace
}  // namespace bccl
