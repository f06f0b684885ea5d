// The loop both SSE2 copies share (bulk_copy.cc's vector routine, uncached_copy.cc's streaming
// one): a cache line per iteration, four unaligned 16-byte loads, then four stores made by
// `store(dst, value)`, so a line is written by one burst. Copies the whole lines of `bytes` and
// advances *dst and *src past them; returns the bytes left (under 64) for the caller's tail.
#pragma once

#if defined(__SSE2__)
#include <emmintrin.h>

#include <cstddef>

namespace bccl {

template <typename Store>
inline size_t copyWholeLines(char** dst, const char** src, size_t bytes, Store store) {
  char* d = *dst;
  const char* s = *src;
  for (; bytes >= 64; bytes -= 64, d += 64, s += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
    store(reinterpret_cast<__m128i*>(d), a);
    store(reinterpret_cast<__m128i*>(d + 16), b);
    store(reinterpret_cast<__m128i*>(d + 32), c);
    store(reinterpret_cast<__m128i*>(d + 48), e);
  }
  *dst = d;
  *src = s;
  return bytes;
}

}  // namespace bccl
#endif
