// copyInterleaved and copySpans: every span of both lists copied exactly, whatever the two
// lists' lengths (uneven, empty, one far longer than the other), and nothing written outside
// the destinations.
#include "algorithms/interleaved_copy.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace bccl {
namespace {

constexpr unsigned char kUntouched = 0xEE;

// Spans of the given lengths, each copying from its own region of `src` to its own region of
// `dst` (one guard byte between regions, so an overrun shows).
struct SpanSet {
  explicit SpanSet(const std::vector<size_t>& lengths, unsigned char seed) {
    size_t total = 0;
    for (size_t len : lengths) total += len + 1;
    src.resize(total);
    dst.assign(total, kUntouched);
    for (size_t i = 0; i < total; ++i) src[i] = static_cast<unsigned char>(i * 31 + seed);
    size_t at = 0;
    for (size_t len : lengths) {
      spans.push_back(CopySpan{reinterpret_cast<char*>(dst.data()) + at,
                               reinterpret_cast<const char*>(src.data()) + at, len});
      at += len + 1;
    }
  }
  auto spanOf() const {
    return [this](int i) { return spans[static_cast<size_t>(i)]; };
  }
  int count() const { return static_cast<int>(spans.size()); }
  // Every destination byte holds its source byte; every guard byte is untouched.
  void expectCopied(const char* what) const {
    size_t at = 0;
    for (const CopySpan& span : spans) {
      for (size_t i = 0; i < span.bytes; ++i)
        ASSERT_EQ(dst[at + i], src[at + i])
            << what << ": byte " << i << " of a " << span.bytes << "-byte span";
      ASSERT_EQ(dst[at + span.bytes], kUntouched) << what << ": wrote past a span";
      at += span.bytes + 1;
    }
  }

  std::vector<unsigned char> src, dst;
  std::vector<CopySpan> spans;
};

TEST(InterleavedCopy, CopiesBothListsWhateverTheirLengths) {
  const std::vector<std::vector<size_t>> shapes = {
      {},
      {0},
      {1},
      {4095, 4096, 4097},
      {3 * 4096 + 17, 5, 0, 8192},
      {100000},
      {65536, 65536, 65536, 65536},
  };
  for (bool uncached : {false, true})
    for (const auto& outLengths : shapes)
      for (const auto& inLengths : shapes) {
        SpanSet out(outLengths, 1), in(inLengths, 2);
        copyInterleaved(in.count(), in.spanOf(), out.count(), out.spanOf(), uncached);
        const std::string what = std::string(uncached ? "streamed" : "cached") + " out of " +
                                 std::to_string(out.count()) + " spans, in of " +
                                 std::to_string(in.count());
        out.expectCopied(("out list, " + what).c_str());
        in.expectCopied(("in list, " + what).c_str());
      }
}

TEST(InterleavedCopy, CopySpansCopiesEverySpan) {
  SpanSet set({7, 0, 4096, 12345}, 3);
  copySpans(set.count(), set.spanOf());
  set.expectCopied("copySpans");
}

}  // namespace
}  // namespace bccl
