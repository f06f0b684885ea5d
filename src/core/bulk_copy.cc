#include "core/bulk_copy.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/deadline.h"
#include "core/logging.h"
#include "core/params.h"
#include "core/sse2_lines.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BCCL_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define BCCL_SANITIZED 1
#endif
#endif
#ifndef BCCL_SANITIZED
#define BCCL_SANITIZED 0
#endif

namespace bccl {
namespace {

const StringParam kCopyKernel("BCCL_COPY_KERNEL", "auto",
                              "Routine for bulk copies: auto (timed once per process), memcpy, "
                              "vector or movsq");

using CopyFn = void (*)(void*, const void*, size_t);

void copyWithMemcpy(void* d, const void* s, size_t n) { memcpy(d, s, n); }

#if defined(__SSE2__)
// 64 bytes per iteration with unaligned 16-byte loads and stores: instructions a translator
// maps one to one, unlike the string instructions memcpy picks for mid-sized copies.
void copyWithVectors(void* dst, const void* src, size_t n) {
  char* d = static_cast<char*>(dst);
  const char* s = static_cast<const char*>(src);
  n = copyWholeLines(&d, &s, n, [](__m128i* at, __m128i v) { _mm_storeu_si128(at, v); });
  memcpy(d, s, n);
}
#endif

#if defined(__x86_64__)
// Eight bytes per step of `rep movsq`: TCG runs it as one tight helper loop.
void copyWithMovsq(void* dst, const void* src, size_t n) {
  size_t words = n / 8;
  void* d = dst;
  const void* s = src;
  asm volatile("rep movsq" : "+D"(d), "+S"(s), "+c"(words) : : "memory");
  memcpy(static_cast<char*>(dst) + (n & ~size_t{7}),
         static_cast<const char*>(src) + (n & ~size_t{7}), n & 7);
}
#endif

struct Kernel {
  const char* name;
  CopyFn fn;
};

const std::vector<Kernel>& allKernels() {
  static const std::vector<Kernel> kernels = {
    {"memcpy", copyWithMemcpy},
#if defined(__SSE2__)
    {"vector", copyWithVectors},
#endif
#if defined(__x86_64__)
    {"movsq", copyWithMovsq},
#endif
  };
  return kernels;
}

// Times every routine on a chunk-sized copy (best of a few interleaved rounds, so a burst of
// other work hits them alike) and keeps memcpy unless another is clearly faster: a few percent
// either way is noise, and memcpy is what every other copy in the process uses.
const Kernel* measureBest() {
#if BCCL_SANITIZED
  // The sanitizers see every byte memcpy moves (bounds, races) but not what inline assembly
  // moves: their builds keep memcpy, so the suite checks every copy.
  return &allKernels()[0];
#endif
  constexpr size_t kBytes = 256 << 10;  // the size of a pipelined chunk
  constexpr int kRounds = 5;
  constexpr double kMargin = 1.25;
  const std::vector<Kernel>& all = allKernels();
  char* src = static_cast<char*>(aligned_alloc(64, kBytes));
  char* dst = static_cast<char*>(aligned_alloc(64, kBytes));
  if (src == nullptr || dst == nullptr) {
    free(src);
    free(dst);
    return &all[0];
  }
  memset(src, 1, kBytes);
  memset(dst, 2, kBytes);
  std::vector<int64_t> best(all.size(), INT64_MAX);
  for (int round = 0; round < kRounds; ++round)
    for (size_t k = 0; k < all.size(); ++k) {
      const int64_t t0 = nowNs();
      all[k].fn(dst, src, kBytes);
      best[k] = std::min(best[k], nowNs() - t0);
    }
  free(src);
  free(dst);
  size_t pick = 0;
  for (size_t k = 1; k < all.size(); ++k)
    if (best[k] * kMargin < best[0] && best[k] < best[pick]) pick = k;
  std::string timings;
  for (size_t k = 0; k < all.size(); ++k) {
    char rate[64];
    snprintf(rate, sizeof(rate), "%s%s %.2f GB/s", k ? ", " : "", all[k].name,
             static_cast<double>(kBytes) / static_cast<double>(std::max<int64_t>(best[k], 1)));
    timings += rate;
  }
  BCCL_INFO("bulk copies use %s (256 KiB: %s)", all[pick].name, timings.c_str());
  return &all[pick];
}

const Kernel* byName(const std::string& name) {
  for (const Kernel& k : allKernels())
    if (name == k.name) return &k;
  return nullptr;
}

std::atomic<const Kernel*> gKernel{nullptr};

const Kernel& chosen() {
  const Kernel* k = gKernel.load(std::memory_order_acquire);
  if (k != nullptr) return *k;
  const std::string wanted = kCopyKernel.get();
  k = wanted == "auto" ? nullptr : byName(wanted);
  if (k == nullptr && wanted != "auto")
    BCCL_WARN("BCCL_COPY_KERNEL=%s is not one of this build's routines; measuring instead",
              wanted.c_str());
  if (k == nullptr) k = measureBest();
  // Threads racing here each measured; the first answer stays, so all use the same routine.
  const Kernel* expected = nullptr;
  if (!gKernel.compare_exchange_strong(expected, k, std::memory_order_acq_rel)) k = expected;
  return *k;
}

}  // namespace

void copyBulk(void* dst, const void* src, size_t bytes) {
  if (bytes != 0) chosen().fn(dst, src, bytes);
}

const char* bulkCopyKernel() { return chosen().name; }

std::vector<const char*> bulkCopyKernels() {
  std::vector<const char*> names;
  for (const Kernel& k : allKernels()) names.push_back(k.name);
  return names;
}

bool setBulkCopyKernel(const char* name) {
  if (name == nullptr) return false;
  const std::string n = name;
  const Kernel* k = n == "auto" ? measureBest() : byName(n);
  if (k == nullptr) return false;
  gKernel.store(k, std::memory_order_release);
  return true;
}

}  // namespace bccl
