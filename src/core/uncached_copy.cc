#include "core/uncached_copy.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/sse2_lines.h"

namespace bccl {

void copyUncached(void* dst, const void* src, size_t bytes, bool fence) {
#if defined(__SSE2__)
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  // Streaming stores need a 16-byte aligned destination, and fill a line best when they write
  // all of it at once: the head up to the next line goes by memcpy.
  const size_t head = std::min(bytes, (64 - reinterpret_cast<uintptr_t>(d) % 64) % 64);
  memcpy(d, s, head);
  d += head;
  s += head;
  bytes -= head;
  // A whole cache line per iteration, so each line is written out by one burst of stores.
  bytes = copyWholeLines(&d, &s, bytes, [](__m128i* at, __m128i v) { _mm_stream_si128(at, v); });
  memcpy(d, s, bytes);
  if (fence) _mm_sfence();
#else
  (void)fence;
  memcpy(dst, src, bytes);
#endif
}

void fenceUncachedStores() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace bccl
