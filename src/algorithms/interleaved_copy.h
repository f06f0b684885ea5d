// Two lists of copies run together, a few KiB of one then a proportional share of the other.
// The board rounds (direct.cc) copy the next round's input into the board (reading memory)
// while they copy the last round's result out (writing memory, streamed past the cache): one
// after the other, a core's write stream idles while it reads and its read stream while it
// writes; taken in turns, the two overlap. A two-thread model of 2-rank allgather rounds
// (64 MiB) ran 1.2-1.3x faster so; in the library the A/B gain was 1.0-1.2x, inside this
// machine's noise, and allreduce rounds showed none
// (docs/measurements/direct-interleaved-20261207.txt).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "core/bulk_copy.h"
#include "core/uncached_copy.h"

namespace bccl {

struct CopySpan {
  char* dst = nullptr;
  const char* src = nullptr;
  size_t bytes = 0;
};

// Walks the spans `spanOf(0..count-1)` in order, copying a given number of bytes per call
// (plain stores, through copyBulk: the `in` side of copyInterleaved).
template <typename SpanOf>
class CopyCursor {
 public:
  CopyCursor(int count, SpanOf spanOf) : count_(count), spanOf_(spanOf) {
    for (int i = 0; i < count; ++i) total_ += spanOf(i).bytes;
  }
  size_t total() const { return total_; }
  // Copies up to `budget` bytes onward.
  void copy(size_t budget) {
    while (budget > 0 && index_ < count_) {
      const CopySpan span = spanOf_(index_);
      const size_t len = std::min(budget, span.bytes - offset_);
      copyBulk(span.dst + offset_, span.src + offset_, len);
      offset_ += len;
      budget -= len;
      if (offset_ == span.bytes) {
        ++index_;
        offset_ = 0;
      }
    }
  }

 private:
  int count_;
  SpanOf spanOf_;
  size_t total_ = 0;
  int index_ = 0;
  size_t offset_ = 0;
};

// Copies every span, in order, with copyBulk.
template <typename SpanOf>
void copySpans(int count, SpanOf spanOf) {
  CopyCursor<SpanOf> cursor(count, spanOf);
  cursor.copy(cursor.total());
}

// Copies every span of `in` (into the cache: plain stores) and of `out` (streamed around the
// cache when `outUncached`): a page of every `out` span at the same offset, then a share of
// `in`, in turn. Walking the `out` spans side by side, not one after another, keeps several
// streams in flight (the two-thread model: 1.1x the busbw of one span at a time). The
// streaming stores are fenced once at the end, so both lists are visible as after memcpy.
template <typename InSpanOf, typename OutSpanOf>
void copyInterleaved(int inCount, InSpanOf inSpanOf, int outCount, OutSpanOf outSpanOf,
                     bool outUncached) {
  constexpr size_t kGrain = 4096;  // a page: long enough to stream, short enough to interleave
  CopyCursor<InSpanOf> in(inCount, inSpanOf);
  size_t longest = 0;
  for (int i = 0; i < outCount; ++i) longest = std::max(longest, outSpanOf(i).bytes);
  // The share of `in` per step, so both lists end together.
  const size_t inGrain = longest == 0 ? in.total() : (in.total() * kGrain + longest - 1) / longest;
  for (size_t at = 0; at < longest; at += kGrain) {
    for (int i = 0; i < outCount; ++i) {
      const CopySpan span = outSpanOf(i);
      if (at >= span.bytes) continue;
      const size_t len = std::min(kGrain, span.bytes - at);
      if (outUncached)
        copyUncached(span.dst + at, span.src + at, len, /*fence=*/false);
      else
        copyBulk(span.dst + at, span.src + at, len);
    }
    in.copy(inGrain);
  }
  in.copy(in.total());  // whatever rounding left
  if (outUncached) fenceUncachedStores();
}

}  // namespace bccl
