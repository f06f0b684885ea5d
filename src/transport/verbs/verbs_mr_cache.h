// Registration cache for user buffers (zero-copy mode). ibv_reg_mr pins and maps pages, costing
// tens of microseconds to milliseconds, so a buffer used again (every training step reuses its
// gradient buffers) must find its registration already there: lookups are a map search, and a
// registration is made once per page-aligned region, then kept until evicted (least recently
// used first, only when no operation holds it) or the cache goes.
//
// The hazard every registration cache has: a registration pins the physical pages that backed
// the range *when it was made*. If the application frees the buffer and the same addresses are
// later backed by other pages (munmap + mmap, heap trimming, MADV_DONTNEED), the cached
// registration still names the old pages and RDMA would read or write stale memory. Without
// memory hooks (UCX patches munmap/brk for this) or on-demand paging, the cache cannot see that
// happen, so it is used only when the application opts in (BCCL_IB_ZERO_COPY=1: "my buffers
// stay mapped", as frameworks with caching allocators guarantee); by default data is staged
// through the pre-registered rings, which is always safe.
#pragma once

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "core/status.h"

namespace bccl {

class VerbsMrCache {
 public:
  VerbsMrCache(ibv_pd* pd, size_t capacityBytes) : pd_(pd), capacity_(capacityBytes) {}
  ~VerbsMrCache();
  VerbsMrCache(const VerbsMrCache&) = delete;
  VerbsMrCache& operator=(const VerbsMrCache&) = delete;

  // A registration covering [addr, addr+bytes), taking a hold on it; release() when the
  // operation using it is finished. `access` is ORed into a new registration.
  StatusOr<ibv_mr*> acquire(const void* addr, size_t bytes, int access);
  void release(ibv_mr* mr);

  size_t registrations() const { return regions_.size(); }
  size_t registeredBytes() const { return bytes_; }
  uint64_t misses() const { return misses_; }
  uint64_t hits() const { return hits_; }

 private:
  struct Region {
    ibv_mr* mr;
    uintptr_t end;
    int access;
    int holds;
    uint64_t lastUse;
  };
  void evictFor(size_t bytes);

  ibv_pd* pd_;
  size_t capacity_;
  std::map<uintptr_t, Region> regions_;  // by start address
  size_t bytes_ = 0;
  uint64_t clock_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace bccl
