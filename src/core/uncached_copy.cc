#include "core/uncached_copy.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
  for (; bytes >= 64; bytes -= 64, d += 64, s += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
  }
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
