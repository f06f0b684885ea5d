// The reduction kernels. Most are plain element-wise loops that the compiler vectorises; the
// same templates are compiled twice, for the baseline ISA and for AVX2 + F16C, and the set to
// use is chosen once from the CPU (the build cannot assume AVX2: the binaries also run in VMs
// without it). fp16 and bf16 on the AVX2 set are written with intrinsics, since compilers do
// not vectorise the fp16 conversion and shuffle too much in the bf16 one.
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

// dst may be a source, but only exactly, so no dependence crosses iterations. Saying so
// spares the vectorised loop its runtime overlap checks.
#if defined(__clang__)
// clang warns when such a loop still cannot be vectorised (64-bit multiply on SSE2, or under
// the sanitizers); the scalar loop is right then, so the warning is noise.
#pragma clang diagnostic ignored "-Wpass-failed"
#define BCCL_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define BCCL_IVDEP _Pragma("GCC ivdep")
#else
#define BCCL_IVDEP
#endif

namespace bccl {
namespace {

// How each type is stored and computed. The 16-bit float types are stored as uint16_t and
// computed in float; float has more than twice their precision plus two bits, so a+b, a*b or
// a/n computed in float and rounded once to 16 bits is the correctly rounded 16-bit result.
template <class T>
struct Elem {
  using Store = T;
  using Calc = T;
  static BCCL_INLINE T load(T x) { return x; }
  static BCCL_INLINE T store(T x) { return x; }
};
template <float (*kToFloat)(uint16_t), uint16_t (*kFromFloat)(float)>
struct Elem16 {
  using Store = uint16_t;
  using Calc = float;
  static BCCL_INLINE float load(uint16_t x) { return kToFloat(x); }
  static BCCL_INLINE uint16_t store(float x) { return kFromFloat(x); }
};
struct Half {};
struct Bf16 {};
template <>
struct Elem<Half> : Elem16<halfToFloat, floatToHalf> {};
template <>
struct Elem<Bf16> : Elem16<bf16ToFloat, floatToBf16> {};

// Integer sum/prod are done on the unsigned twin: wraparound is what users of integer
// reductions expect, and signed overflow would be undefined behaviour.
template <class T>
using WrapT = typename std::conditional_t<std::is_integral_v<T>, std::make_unsigned<T>,
                                          std::common_type<T>>::type;

template <class T>
BCCL_INLINE bool isNan(T x) {
  if constexpr (std::is_floating_point_v<T>) return x != x;
  return false;
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

// Loops run in blocks of a constant element count, and only the last partial block is left
// to a plain loop. GCC's -O2 cost model vectorises only loops that need neither an epilogue
// nor alias checks; the blocks qualify, so the kernels stay vectorised if this file is ever
// built without the -O3 the build gives it.
constexpr size_t kBlockBytes = 256;

template <class T, class Op>
BCCL_INLINE void reduceLoop(void* dst, const void* a, const void* b, size_t n) {
  using E = Elem<T>;
  using S = typename E::Store;
  constexpr size_t kBlock = kBlockBytes / sizeof(S);
  S* d = static_cast<S*>(dst);
  const S* x = static_cast<const S*>(a);
  const S* y = static_cast<const S*>(b);
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    BCCL_IVDEP
    for (size_t j = 0; j < kBlock; ++j) {
      d[i + j] = E::store(Op::apply(E::load(x[i + j]), E::load(y[i + j])));
    }
  }
  for (; i < n; ++i) d[i] = E::store(Op::apply(E::load(x[i]), E::load(y[i])));
}

template <class T>
BCCL_INLINE typename Elem<T>::Store divideOne(typename Elem<T>::Store x, int divisor) {
  using E = Elem<T>;
  using C = typename E::Calc;
  if constexpr (std::is_floating_point_v<C>) {
    return E::store(E::load(x) / C(divisor));
  } else if constexpr (sizeof(T) <= 4) {
    // x86 has no vector integer division, so divide in floating point. With p mantissa bits
    // and |x| < 2^p, rounding moves x/d by at most |x/d| * 2^-p < 1/d, and a non-integer x/d
    // is at least 1/d from any integer, so truncating gives C's x / d exactly. (For 8-bit x
    // and d > 2^24, float(d) is inexact but |x| < d, so both sides are 0.)
    using F = std::conditional_t<sizeof(T) == 1, float, double>;
    return T(F(x) / F(divisor));
  } else {
    return T(x / T(divisor));
  }
}

template <class T>
BCCL_INLINE void scaleLoop(void* dst, const void* src, size_t n, int divisor) {
  using S = typename Elem<T>::Store;
  constexpr size_t kBlock = kBlockBytes / sizeof(S);
  S* d = static_cast<S*>(dst);
  const S* s = static_cast<const S*>(src);
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    BCCL_IVDEP
    for (size_t j = 0; j < kBlock; ++j) d[i + j] = divideOne<T>(s[i + j], divisor);
  }
  for (; i < n; ++i) d[i] = divideOne<T>(s[i], divisor);
}

#if BCCL_HAVE_AVX2
// Vector twins of the ops above, for the 16-bit float kernels below.
template <class Op>
struct Vec;
template <>
struct Vec<Sum> {
  BCCL_AVX2 __m256 operator()(__m256 a, __m256 b) const { return _mm256_add_ps(a, b); }
};
template <>
struct Vec<Prod> {
  BCCL_AVX2 __m256 operator()(__m256 a, __m256 b) const { return _mm256_mul_ps(a, b); }
};
// maxps/minps already return b on ties and when b is NaN; only a NaN in a needs patching.
template <>
struct Vec<Max> {
  BCCL_AVX2 __m256 operator()(__m256 a, __m256 b) const {
    return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  }
};
template <>
struct Vec<Min> {
  BCCL_AVX2 __m256 operator()(__m256 a, __m256 b) const {
    return _mm256_blendv_ps(_mm256_min_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  }
};
// scaleDivide reuses the binary kernel with src as both inputs; the second load hits L1.
struct DivideBy {
  __m256 divisor;
  BCCL_AVX2 __m256 operator()(__m256 a, __m256) const { return _mm256_div_ps(a, divisor); }
};

// 16 elements of a 16-bit float type to and from two vectors of 8 floats. Compilers do not
// vectorise the scalar fp16 conversion, and their bf16 version shuffles far more than needed.
struct HalfCodec {
  BCCL_AVX2 static void load(const uint16_t* p, __m256& lo, __m256& hi) {
    lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  }
  BCCL_AVX2 static void store(uint16_t* p, __m256 lo, __m256 hi) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 8),
                     _mm256_cvtps_ph(hi, _MM_FROUND_TO_NEAREST_INT));
  }
};

// bf16 is the top half of a float, so widening interleaves zeros below each element and
// narrowing packs the top halves back. Both work within 128-bit lanes and the pack undoes the
// unpack's order, so the float lanes are permuted but no cross-lane shuffle is needed.
struct Bf16Codec {
  BCCL_AVX2 static void load(const uint16_t* p, __m256& lo, __m256& hi) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    lo = _mm256_castsi256_ps(_mm256_unpacklo_epi16(_mm256_setzero_si256(), v));
    hi = _mm256_castsi256_ps(_mm256_unpackhi_epi16(_mm256_setzero_si256(), v));
  }
  // Round to nearest even as floatToBf16 does, minus its NaN case: every value stored here
  // is one IEEE operation on widened bf16 values (or one of them), so a NaN's low 16 bits
  // are zero and the rounding bias cannot carry out of them.
  BCCL_AVX2 static __m256i round(__m256 v) {
    const __m256i x = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    const __m256i bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
    return _mm256_srli_epi32(_mm256_add_epi32(x, bias), 16);
  }
  BCCL_AVX2 static void store(uint16_t* p, __m256 lo, __m256 hi) {
    // Lanes hold 0..0xffff, so the unsigned saturating pack is exact.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_packus_epi32(round(lo), round(hi)));
  }
};

template <class Codec, class VecOp>
BCCL_AVX2 void reduce16(void* dst, const void* a, const void* b, size_t n, VecOp op) {
  uint16_t* d = static_cast<uint16_t*>(dst);
  const uint16_t* x = static_cast<const uint16_t*>(a);
  const uint16_t* y = static_cast<const uint16_t*>(b);
  __m256 x0, x1, y0, y1;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    Codec::load(x + i, x0, x1);
    Codec::load(y + i, y0, y1);
    Codec::store(d + i, op(x0, y0), op(x1, y1));
  }
  if (i < n) {
    // The tail goes through the same instructions via a padded copy so every element is
    // rounded identically, whatever its position.
    uint16_t tx[16] = {}, ty[16] = {}, td[16];
    std::memcpy(tx, x + i, (n - i) * 2);
    std::memcpy(ty, y + i, (n - i) * 2);
    Codec::load(tx, x0, x1);
    Codec::load(ty, y0, y1);
    Codec::store(td, op(x0, y0), op(x1, y1));
    std::memcpy(d + i, td, (n - i) * 2);
  }
}
#endif  // BCCL_HAVE_AVX2

// Entry points, one per (ISA, type, op), gathered in one struct per (ISA, type) so the
// dispatch tables can be built from a type list.
template <class T>
struct Portable {
  template <class Op>
  static void reduce(void* d, const void* a, const void* b, size_t n) {
    reduceLoop<T, Op>(d, a, b, n);
  }
  static void scale(void* d, const void* s, size_t n, int div) { scaleLoop<T>(d, s, n, div); }
};

#if BCCL_HAVE_AVX2
template <class T>
struct Avx2 {
  static constexpr bool kHalf = std::is_same_v<T, Half>, kBf16 = std::is_same_v<T, Bf16>;
  using Codec = std::conditional_t<kHalf, HalfCodec, Bf16Codec>;
  template <class Op>
  BCCL_AVX2 static void reduce(void* d, const void* a, const void* b, size_t n) {
    if constexpr (kHalf || kBf16) {
      reduce16<Codec>(d, a, b, n, Vec<Op>{});
    } else {
      reduceLoop<T, Op>(d, a, b, n);
    }
  }
  BCCL_AVX2 static void scale(void* d, const void* s, size_t n, int div) {
    if constexpr (kHalf || kBf16) {
      reduce16<Codec>(d, s, s, n, DivideBy{_mm256_set1_ps(float(div))});
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
template <template <class> class K, class... Ts>
constexpr Kernels makeKernels(const char* name, TypeList<Ts...>) {
  static_assert(sizeof...(Ts) == bcclNumTypes, "one entry per bcclDataType_t");
  return Kernels{name,
                 {{ReduceRow{{K<Ts>::template reduce<Sum>, K<Ts>::template reduce<Prod>,
                              K<Ts>::template reduce<Max>, K<Ts>::template reduce<Min>,
                              K<Ts>::template reduce<Sum>}}...}},
                 {{K<Ts>::scale...}}};
}

constexpr Kernels kPortable = makeKernels<Portable>("portable", AllTypes{});
#if BCCL_HAVE_AVX2
constexpr Kernels kAvx2 = makeKernels<Avx2>("avx2", AllTypes{});

bool cpuHasAvx2() {
  __builtin_cpu_init();  // may run before libgcc's constructor when called from one
  // clang's __builtin_cpu_supports does not know "f16c", so read CPUID leaf 1 for it; the
  // builtin's "avx2" also checks that the OS saves the YMM registers.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  return f16c && __builtin_cpu_supports("avx2");
}
#else
constexpr const Kernels& kAvx2 = kPortable;
bool cpuHasAvx2() { return false; }
#endif

const Kernels* detectKernels() { return cpuHasAvx2() ? &kAvx2 : &kPortable; }

// The tables are constants, so relaxed ordering is enough, and threads racing on the first
// call all store the same pointer.
std::atomic<const Kernels*> gKernels{nullptr};

const Kernels& kernels() {
  const Kernels* k = gKernels.load(std::memory_order_relaxed);
  if (k == nullptr) {
    k = detectKernels();
    gKernels.store(k, std::memory_order_relaxed);
  }
  return *k;
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
  const Kernels* k = nullptr;
  if (name == nullptr) return false;
  if (std::strcmp(name, "auto") == 0) k = detectKernels();
  if (std::strcmp(name, "portable") == 0) k = &kPortable;
  if (std::strcmp(name, "avx2") == 0 && cpuHasAvx2()) k = &kAvx2;
  if (k == nullptr) return false;
  gKernels.store(k, std::memory_order_relaxed);
  return true;
}

}  // namespace bccl
