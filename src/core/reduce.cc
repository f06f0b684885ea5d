// The reduction kernels. Every loop is a plain element-wise loop that the compiler vectorises
// at -O3; the same templates are compiled twice, once for the baseline ISA and once for
// AVX2 + F16C, and the set to use is chosen once from the CPU (the build cannot assume AVX2
// because the binaries also run in VMs without it). fp16 on the AVX2 set uses F16C directly,
// since compilers do not vectorise the scalar conversion.
#include "core/reduce.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/dtype.h"
#include "core/half.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define BCCL_HAVE_AVX2 1
#define BCCL_AVX2 __attribute__((target("avx2,f16c")))
#else
#define BCCL_HAVE_AVX2 0
#endif

// Kernels are inlined into the per-ISA entry points so each copy is compiled for that ISA.
#define BCCL_INLINE inline __attribute__((always_inline))

namespace bccl {
namespace {

// Tags for the 16-bit float types: stored as uint16_t, computed in float. float holds more
// than twice their precision plus two bits, so computing a+b, a*b or a/n in float and rounding
// once to 16 bits gives the correctly rounded 16-bit result.
struct Half {};
struct Bf16 {};

template <class T>
struct Elem {
  using Store = T;
  using Calc = T;
  static BCCL_INLINE Calc load(T x) { return x; }
  static BCCL_INLINE T store(Calc x) { return x; }
};
template <>
struct Elem<Half> {
  using Store = uint16_t;
  using Calc = float;
  static BCCL_INLINE float load(uint16_t x) { return halfToFloat(x); }
  static BCCL_INLINE uint16_t store(float x) { return floatToHalf(x); }
};
template <>
struct Elem<Bf16> {
  using Store = uint16_t;
  using Calc = float;
  static BCCL_INLINE float load(uint16_t x) { return bf16ToFloat(x); }
  static BCCL_INLINE uint16_t store(float x) { return floatToBf16(x); }
};

// Integer sum/prod are done on the unsigned twin: wraparound is what users of integer
// reductions expect, and signed overflow would be undefined behaviour.
template <class T>
using WrapT = typename std::conditional_t<std::is_integral_v<T>, std::make_unsigned<T>,
                                          std::common_type<T>>::type;

template <class T>
BCCL_INLINE bool isNan(T x) {
  if constexpr (std::is_floating_point_v<T>) {
    return x != x;
  } else {
    (void)x;
    return false;
  }
}

struct Sum {
  template <class T>
  static BCCL_INLINE T apply(T a, T b) {
    using U = WrapT<T>;
    return T(U(U(a) + U(b)));
  }
};
struct Prod {
  template <class T>
  static BCCL_INLINE T apply(T a, T b) {
    using U = WrapT<T>;
    return T(U(U(a) * U(b)));
  }
};
// Min and max are the plain comparisons `a < b ? a : b` and `a > b ? a : b` (so on a tie,
// including -0 vs +0, they return b, like x86 minps/maxps), except that a NaN in either
// input gives NaN: one rank's NaN must not silently vanish from a reduction depending on
// which side of the comparison it landed.
struct Max {
  template <class T>
  static BCCL_INLINE T apply(T a, T b) {
    return (a > b || isNan(a)) ? a : b;
  }
};
struct Min {
  template <class T>
  static BCCL_INLINE T apply(T a, T b) {
    return (a < b || isNan(a)) ? a : b;
  }
};

template <class T, class Op>
BCCL_INLINE void reduceLoop(void* dst, const void* a, const void* b, size_t n) {
  using E = Elem<T>;
  using S = typename E::Store;
  S* d = static_cast<S*>(dst);
  const S* x = static_cast<const S*>(a);
  const S* y = static_cast<const S*>(b);
  for (size_t i = 0; i < n; ++i) d[i] = E::store(Op::apply(E::load(x[i]), E::load(y[i])));
}

template <class T>
BCCL_INLINE void scaleLoop(void* dst, const void* src, size_t n, int divisor) {
  using E = Elem<T>;
  using S = typename E::Store;
  using C = typename E::Calc;
  S* d = static_cast<S*>(dst);
  const S* s = static_cast<const S*>(src);
  if constexpr (std::is_floating_point_v<C>) {
    const C dv = C(divisor);
    for (size_t i = 0; i < n; ++i) d[i] = E::store(E::load(s[i]) / dv);
  } else if constexpr (sizeof(T) <= 4) {
    // x86 has no vector integer division, so divide in floating point. With p mantissa bits
    // and |x| < 2^p, rounding moves x/d by at most |x/d| * 2^-p < 1/d, and a non-integer x/d
    // is at least 1/d from any integer, so truncating gives C's x / d exactly. (For 8-bit x
    // and d > 2^24, float(d) is inexact but |x| < d, so both sides are 0.)
    using F = std::conditional_t<sizeof(T) == 1, float, double>;
    const F dv = F(divisor);
    for (size_t i = 0; i < n; ++i) d[i] = T(F(s[i]) / dv);
  } else {
    const T dv = T(divisor);
    for (size_t i = 0; i < n; ++i) d[i] = s[i] / dv;
  }
}

#if BCCL_HAVE_AVX2
BCCL_AVX2 inline __m256 vecApply(Sum, __m256 a, __m256 b) { return _mm256_add_ps(a, b); }
BCCL_AVX2 inline __m256 vecApply(Prod, __m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
BCCL_AVX2 inline __m256 vecApply(Max, __m256 a, __m256 b) {
  const __m256 pickA = _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ), _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  return _mm256_blendv_ps(b, a, pickA);
}
BCCL_AVX2 inline __m256 vecApply(Min, __m256 a, __m256 b) {
  const __m256 pickA = _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_LT_OQ), _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  return _mm256_blendv_ps(b, a, pickA);
}

BCCL_AVX2 inline __m256 loadHalf8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
BCCL_AVX2 inline void storeHalf8(uint16_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

template <class Op>
BCCL_AVX2 void reduceHalfF16c(void* dst, const void* a, const void* b, size_t n) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  const uint16_t* x = static_cast<const uint16_t*>(a);
  const uint16_t* y = static_cast<const uint16_t*>(b);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 r0 = vecApply(Op{}, loadHalf8(x + i), loadHalf8(y + i));
    const __m256 r1 = vecApply(Op{}, loadHalf8(x + i + 8), loadHalf8(y + i + 8));
    storeHalf8(d + i, r0);
    storeHalf8(d + i + 8, r1);
  }
  // The tail goes through the same instructions via a padded copy so every element is
  // rounded identically, whatever its position.
  for (; i < n; i += 8) {
    const size_t m = n - i < 8 ? n - i : 8;
    uint16_t tx[8] = {}, ty[8] = {}, td[8];
    std::memcpy(tx, x + i, m * 2);
    std::memcpy(ty, y + i, m * 2);
    storeHalf8(td, vecApply(Op{}, loadHalf8(tx), loadHalf8(ty)));
    std::memcpy(d + i, td, m * 2);
  }
}

BCCL_AVX2 void scaleHalfF16c(void* dst, const void* src, size_t n, int divisor) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  const uint16_t* s = static_cast<const uint16_t*>(src);
  const __m256 dv = _mm256_set1_ps(float(divisor));
  size_t i = 0;
  for (; i + 8 <= n; i += 8) storeHalf8(d + i, _mm256_div_ps(loadHalf8(s + i), dv));
  if (i < n) {
    uint16_t ts[8] = {}, td[8];
    std::memcpy(ts, s + i, (n - i) * 2);
    storeHalf8(td, _mm256_div_ps(loadHalf8(ts), dv));
    std::memcpy(d + i, td, (n - i) * 2);
  }
}
#endif  // BCCL_HAVE_AVX2

// Entry points, one per (ISA, type, op). Wrapped in structs so they can be passed as template
// template arguments when building the dispatch tables.
template <class T, class Op>
struct PortableReduce {
  static void run(void* d, const void* a, const void* b, size_t n) { reduceLoop<T, Op>(d, a, b, n); }
};
template <class T>
struct PortableScale {
  static void run(void* d, const void* s, size_t n, int div) { scaleLoop<T>(d, s, n, div); }
};

#if BCCL_HAVE_AVX2
template <class T, class Op>
struct Avx2Reduce {
  BCCL_AVX2 static void run(void* d, const void* a, const void* b, size_t n) {
    if constexpr (std::is_same_v<T, Half>) {
      reduceHalfF16c<Op>(d, a, b, n);
    } else {
      reduceLoop<T, Op>(d, a, b, n);
    }
  }
};
template <class T>
struct Avx2Scale {
  BCCL_AVX2 static void run(void* d, const void* s, size_t n, int div) {
    if constexpr (std::is_same_v<T, Half>) {
      scaleHalfF16c(d, s, n, div);
    } else {
      scaleLoop<T>(d, s, n, div);
    }
  }
};
#endif

using ReduceFn = void (*)(void*, const void*, const void*, size_t);
using ScaleFn = void (*)(void*, const void*, size_t, int);
using ReduceRow = std::array<ReduceFn, bcclNumOps>;

struct Kernels {
  const char* name;
  std::array<ReduceRow, bcclNumTypes> reduce;
  std::array<ScaleFn, bcclNumTypes> scale;
};

template <class... Ts>
struct TypeList {};
// In bcclDataType_t order.
using AllTypes =
    TypeList<int8_t, uint8_t, int32_t, uint32_t, int64_t, uint64_t, Half, float, double, Bf16>;

// Avg reduces as Sum; rows follow bcclRedOp_t order.
template <template <class, class> class R, template <class> class S, class... Ts>
constexpr Kernels makeKernels(const char* name, TypeList<Ts...>) {
  static_assert(sizeof...(Ts) == bcclNumTypes, "one entry per bcclDataType_t");
  return Kernels{name,
                 {{ReduceRow{{R<Ts, Sum>::run, R<Ts, Prod>::run, R<Ts, Max>::run,
                              R<Ts, Min>::run, R<Ts, Sum>::run}}...}},
                 {{S<Ts>::run...}}};
}

constexpr Kernels kPortable = makeKernels<PortableReduce, PortableScale>("portable", AllTypes{});
#if BCCL_HAVE_AVX2
constexpr Kernels kAvx2 = makeKernels<Avx2Reduce, Avx2Scale>("avx2", AllTypes{});
#endif

bool cpuHasAvx2() {
#if BCCL_HAVE_AVX2
  __builtin_cpu_init();  // may run before libgcc's constructor when called from one
  // clang's __builtin_cpu_supports does not know "f16c", so read CPUID leaf 1 for it; the
  // builtin's "avx2" also checks that the OS saves the YMM registers.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  return f16c && __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

const Kernels* autoKernels() {
#if BCCL_HAVE_AVX2
  static const Kernels* const chosen = cpuHasAvx2() ? &kAvx2 : &kPortable;
  return chosen;
#else
  return &kPortable;
#endif
}

std::atomic<const Kernels*> gForced{nullptr};

const Kernels& kernels() {
  const Kernels* k = gForced.load(std::memory_order_acquire);
  return k != nullptr ? *k : *autoKernels();
}

}  // namespace

void reduceInto(void* dst, const void* a, const void* b, size_t count, bcclDataType_t dt,
                bcclRedOp_t op) {
  if (count == 0 || !isValidDtype(dt) || !isValidRedOp(op)) return;
  kernels().reduce[dt][op](dst, a, b, count);
}

void scaleDivide(void* dst, const void* src, size_t count, bcclDataType_t dt, int divisor) {
  if (count == 0 || !isValidDtype(dt)) return;
  if (divisor <= 1) {
    if (dst != src) std::memmove(dst, src, count * dtypeSize(dt));
    return;
  }
  kernels().scale[dt](dst, src, count, divisor);
}

const char* reduceIsa() { return kernels().name; }

bool setReduceIsa(const char* name) {
  if (name == nullptr) return false;
  if (std::strcmp(name, "auto") == 0) {
    gForced.store(nullptr, std::memory_order_release);
  } else if (std::strcmp(name, "portable") == 0) {
    gForced.store(&kPortable, std::memory_order_release);
#if BCCL_HAVE_AVX2
  } else if (std::strcmp(name, "avx2") == 0 && cpuHasAvx2()) {
    gForced.store(&kAvx2, std::memory_order_release);
#endif
  } else {
    return false;
  }
  return true;
}

}  // namespace bccl
