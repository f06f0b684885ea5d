// A copy whose destination bypasses the cache: for output that nothing reads again soon and
// that is larger than the cache, where a normal store first reads each destination line in
// (read for ownership) and evicts something useful to hold it.
#pragma once

#include <cstddef>

namespace bccl {

// memcpy(dst, src, bytes) with non-temporal stores where the CPU has them (SSE2; else plain
// memcpy). dst and src must not overlap. The stores are weakly ordered: they are fenced before
// it returns, so the bytes are visible to other threads as after a memcpy. A caller issuing many
// short copies in a row may pass `fence = false` and call fenceUncachedStores() once after them.
void copyUncached(void* dst, const void* src, size_t bytes, bool fence = true);
void fenceUncachedStores();

}  // namespace bccl
