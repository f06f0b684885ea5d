#include "transport/verbs/verbs_mr_cache.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "core/logging.h"

namespace bccl {
namespace {

// Regions overlapping one being registered are merged into it when free; held ones stay, so
// a covering region may sit a few entries before the predecessor: look back this far.
constexpr int kLookBack = 8;

uintptr_t pageSize() {
  static const uintptr_t size = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  return size;
}

}  // namespace

VerbsMrCache::~VerbsMrCache() {
  for (auto& [start, r] : regions_) {
    if (r.holds > 0) BCCL_WARN("verbs: registration at %#lx still held at teardown", start);
    ibv_dereg_mr(r.mr);
  }
}

StatusOr<ibv_mr*> VerbsMrCache::acquire(const void* addr, size_t bytes, int access) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  const uintptr_t e = a + (bytes == 0 ? 1 : bytes);
  ++clock_;
  auto it = regions_.upper_bound(a);
  for (int i = 0; i < kLookBack && it != regions_.begin(); ++i) {
    --it;
    Region& r = it->second;
    if (r.end >= e && (r.access & access) == access) {
      ++hits_;
      ++r.holds;
      r.lastUse = clock_;
      return r.mr;
    }
  }
  ++misses_;
  uintptr_t start = a & ~(pageSize() - 1);
  uintptr_t end = (e + pageSize() - 1) & ~(pageSize() - 1);
  int acc = access;
  // Absorb free regions that overlap the new one, so the map does not fill with near-copies.
  std::vector<uintptr_t> absorbed;
  for (auto o = regions_.begin(); o != regions_.end() && o->first < end; ++o) {
    if (o->second.end <= start || o->second.holds > 0) continue;
    start = std::min(start, o->first);
    end = std::max(end, o->second.end);
    acc |= o->second.access;
    absorbed.push_back(o->first);
  }
  for (uintptr_t k : absorbed) {
    Region& r = regions_[k];
    bytes_ -= r.end - k;
    ibv_dereg_mr(r.mr);
    regions_.erase(k);
  }
  evictFor(end - start);
  ibv_mr* mr = ibv_reg_mr(pd_, reinterpret_cast<void*>(start), end - start, acc);
  if (mr == nullptr && errno == EFAULT && !absorbed.empty()) {
    // An absorbed region's memory may be unmapped by now (freed since it was registered):
    // register just what was asked for.
    start = a & ~(pageSize() - 1);
    end = (e + pageSize() - 1) & ~(pageSize() - 1);
    acc = access;
    mr = ibv_reg_mr(pd_, reinterpret_cast<void*>(start), end - start, acc);
  }
  if (mr == nullptr)
    return systemError("verbs: cannot register " + std::to_string(end - start) +
                       " bytes of user memory (ibv_reg_mr: " + strerror(errno) +
                       "; is 'ulimit -l' large enough?)");
  // A region starting at the same page as a held one replaces its map slot only when free.
  auto existing = regions_.find(start);
  if (existing != regions_.end()) {
    // Held (else it was absorbed): keep both alive by leaking nothing; release() finds the
    // held one through its mr pointer, and this one is returned un-cached.
    BCCL_TRACE("verbs: registration at %#lx is held; using an uncached one", start);
    return mr;
  }
  regions_[start] = Region{mr, end, acc, 1, clock_};
  bytes_ += end - start;
  return mr;
}

void VerbsMrCache::release(ibv_mr* mr) {
  auto it = regions_.find(reinterpret_cast<uintptr_t>(mr->addr));
  if (it == regions_.end() || it->second.mr != mr) {
    ibv_dereg_mr(mr);  // the uncached one made beside a held region
    return;
  }
  if (it->second.holds > 0) --it->second.holds;
}

void VerbsMrCache::evictFor(size_t bytes) {
  while (bytes_ + bytes > capacity_) {
    auto victim = regions_.end();
    for (auto it = regions_.begin(); it != regions_.end(); ++it)
      if (it->second.holds == 0 &&
          (victim == regions_.end() || it->second.lastUse < victim->second.lastUse))
        victim = it;
    if (victim == regions_.end()) return;  // everything is in use: go over capacity
    bytes_ -= victim->second.end - victim->first;
    ibv_dereg_mr(victim->second.mr);
    regions_.erase(victim);
  }
}

}  // namespace bccl
