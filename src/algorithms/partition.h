// Splitting a buffer into per-rank segments and pipelining chunks. Every rank must compute the
// same split for the same segment, or messages would not match; keeping the arithmetic here, in
// one place, is what guarantees it.
#pragma once

#include <algorithm>
#include <cstddef>

namespace bccl {

struct Span {
  size_t offset = 0;  // elements
  size_t count = 0;
};

// Segment i of `count` elements split as evenly as possible into `parts`.
inline Span segmentOf(size_t count, int parts, int i) {
  size_t base = count / parts, extra = count % parts;
  size_t idx = static_cast<size_t>(i);
  return Span{idx * base + std::min(idx, extra), base + (idx < extra ? 1 : 0)};
}

inline size_t chunkElems(size_t chunkBytes, size_t elemSize) {
  return std::max<size_t>(1, chunkBytes / elemSize);
}

inline size_t numChunks(const Span& seg, size_t perChunk) {
  return (seg.count + perChunk - 1) / perChunk;
}

inline Span chunkOf(const Span& seg, size_t perChunk, size_t j) {
  size_t off = j * perChunk;
  return Span{seg.offset + off, std::min(perChunk, seg.count - off)};
}

inline int modRank(int r, int n) { return ((r % n) + n) % n; }

// How many chunk offsets the ring algorithms move together (ring.cc): enough that the link stays
// busy while the first chunk of a window is reduced, few enough that what all ranks of a host
// have in flight stays well inside a shared cache (n x window = 16 chunks). The cost model reads
// it too, to know that the ring forwards data while it is still in cache.
inline size_t ringWindowChunks(int nranks) {
  return static_cast<size_t>(std::max(2, 16 / std::max(1, nranks)));
}

}  // namespace bccl
