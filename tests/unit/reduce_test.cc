// Checks the reduction kernels and dtype helpers against slow, obviously-correct references:
// a wrong rounding, a dropped NaN or a vector tail bug would silently corrupt every
// allreduce, so every dtype x op runs on both kernel sets, in and out of place, at sizes that
// hit the vector body and the scalar tail.
#include "core/reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/half.h"

namespace bccl {
namespace {

// ---- independent references for the 16-bit formats ---------------------------------------

// Decodes from the bit fields with ldexp, sharing nothing with half.h.
double refHalfToDouble(uint16_t h) {
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  double v;
  if (exp == 0) {
    v = std::ldexp(double(mant), -24);
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else {
    v = std::ldexp(double(1024 + mant), exp - 25);
  }
  return (h & 0x8000) ? -v : v;
}

double refBf16ToDouble(uint16_t h) {
  const int exp = (h >> 7) & 0xff;
  const int mant = h & 0x7f;
  double v;
  if (exp == 0) {
    v = std::ldexp(double(mant), -133);
  } else if (exp == 255) {
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else {
    v = std::ldexp(double(128 + mant), exp - 134);
  }
  return (h & 0x8000) ? -v : v;
}

TEST(HalfConversion, AllBitPatternsDecodeAndRoundTrip) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    const float f = halfToFloat(h);
    const double want = refHalfToDouble(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << i;
      ASSERT_EQ(std::signbit(f), bool(h & 0x8000)) << std::hex << i;
      // Quieting keeps sign and payload and only sets the quiet bit.
      ASSERT_EQ(floatToHalf(f), uint16_t(h | 0x0200)) << std::hex << i;
    } else {
      ASSERT_EQ(double(f), want) << std::hex << i;
      ASSERT_EQ(std::signbit(f), bool(h & 0x8000)) << std::hex << i;
      ASSERT_EQ(floatToHalf(f), h) << std::hex << i;
    }
  }
}

TEST(HalfConversion, EdgeCases) {
  EXPECT_EQ(floatToHalf(0.0f), 0x0000);
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(floatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(floatToHalf(65504.0f), 0x7bff);    // max finite
  EXPECT_EQ(floatToHalf(65519.996f), 0x7bff);  // just under the midpoint
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);    // tie rounds to even: Inf
  EXPECT_EQ(floatToHalf(1e10f), 0x7c00);       // overflow
  EXPECT_EQ(floatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(floatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  const uint16_t nan = floatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  EXPECT_EQ(floatToHalf(-std::numeric_limits<float>::quiet_NaN()) & 0x8000, 0x8000);
  // A NaN whose payload lives only in bits a half cannot hold must still be a NaN.
  EXPECT_EQ(floatToHalf(bitsToFloat(0x7f800001u)), 0x7e00);
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -14)), 0x0400);     // min normal
  EXPECT_EQ(floatToHalf(std::ldexp(1023.0f, -24)), 0x03ff);  // max subnormal
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -24)), 0x0001);     // min subnormal
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -25)), 0x0000);     // tie to even: 0
  EXPECT_EQ(floatToHalf(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(floatToHalf(std::ldexp(3.0f, -25)), 0x0002);     // 1.5 ulp: tie to even 2
  EXPECT_EQ(floatToHalf(std::ldexp(2047.0f, -25)), 0x0400);  // rounds up into normals
  EXPECT_EQ(floatToHalf(-std::ldexp(1.0f, -30)), 0x8000);    // underflow keeps sign
  EXPECT_EQ(floatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie, even stays
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie, odd rounds up
  EXPECT_EQ(halfToFloat(0x8000), 0.0f);
  EXPECT_TRUE(std::signbit(halfToFloat(0x8000)));
  EXPECT_EQ(halfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(halfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(halfToFloat(0xfc00)) && halfToFloat(0xfc00) < 0);
  EXPECT_TRUE(std::isnan(halfToFloat(0x7c01)));
}

// Every pair of neighbouring halves: their midpoint ties to the even one, and the floats
// either side of it round to the nearer one. Covers subnormals and the overflow to Inf.
TEST(HalfConversion, RoundsToNearestEvenBetweenEveryNeighbourPair) {
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double lo = refHalfToDouble(uint16_t(h));
    const double hi = h + 1 == 0x7c00 ? 65536.0 : refHalfToDouble(uint16_t(h + 1));
    const double mid = (lo + hi) / 2;
    const float m = float(mid);
    ASSERT_EQ(double(m), mid);
    const uint16_t even = (h & 1) ? uint16_t(h + 1) : uint16_t(h);
    ASSERT_EQ(floatToHalf(m), even) << std::hex << h;
    ASSERT_EQ(floatToHalf(std::nextafter(m, 0.0f)), h) << std::hex << h;
    ASSERT_EQ(floatToHalf(std::nextafter(m, 1e30f)), h + 1) << std::hex << h;
    ASSERT_EQ(floatToHalf(-m), even | 0x8000) << std::hex << h;
  }
}

TEST(Bf16Conversion, AllBitPatternsDecodeAndRoundTrip) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = uint16_t(i);
    const float f = bf16ToFloat(h);
    const double want = refBf16ToDouble(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << i;
      ASSERT_EQ(floatToBf16(f), uint16_t(h | 0x0040)) << std::hex << i;
    } else {
      ASSERT_EQ(double(f), want) << std::hex << i;
      ASSERT_EQ(floatToBf16(f), h) << std::hex << i;
    }
  }
}

TEST(Bf16Conversion, EdgeCases) {
  EXPECT_EQ(floatToBf16(0.0f), 0x0000);
  EXPECT_EQ(floatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to Inf
  EXPECT_EQ(floatToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  // NaNs whose payload is only in the low 16 bits would become Inf if merely rounded.
  EXPECT_EQ(floatToBf16(bitsToFloat(0x7f800001u)), 0x7fc0);
  EXPECT_EQ(floatToBf16(bitsToFloat(0xffffffffu)), 0xffff);
  EXPECT_EQ(floatToBf16(bitsToFloat(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(floatToBf16(bitsToFloat(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(floatToBf16(bitsToFloat(0x3f808001u)), 0x3f81);
  EXPECT_EQ(floatToBf16(bitsToFloat(0x00008000u)), 0x0000);  // subnormal tie
  EXPECT_EQ(floatToBf16(bitsToFloat(0x00018000u)), 0x0002);
}

TEST(Bf16Conversion, RoundsToNearestEvenBetweenEveryNeighbourPair) {
  for (uint32_t h = 0; h < 0x7f80; ++h) {
    const double lo = refBf16ToDouble(uint16_t(h));
    const double hi = h + 1 == 0x7f80 ? std::ldexp(1.0, 128) : refBf16ToDouble(uint16_t(h + 1));
    const float m = float((lo + hi) / 2);
    ASSERT_EQ(double(m), (lo + hi) / 2);
    const uint16_t even = (h & 1) ? uint16_t(h + 1) : uint16_t(h);
    ASSERT_EQ(floatToBf16(m), even) << std::hex << h;
    ASSERT_EQ(floatToBf16(std::nextafter(m, 0.0f)), h) << std::hex << h;
    ASSERT_EQ(floatToBf16(std::nextafter(m, 1e38f * 10)), h + 1) << std::hex << h;
  }
}

// ---- the kernel matrix -------------------------------------------------------------------

struct HalfTag {};
struct Bf16Tag {};

// What the test needs to know per dtype: storage, the type values are computed in, and how
// to convert between them.
template <class T>
struct Traits {
  using Store = T;
  using Calc = T;
  static Calc load(T x) { return x; }
  static T store(Calc x) { return x; }
};
template <>
struct Traits<HalfTag> {
  using Store = uint16_t;
  using Calc = float;
  static float load(uint16_t x) { return halfToFloat(x); }
  static uint16_t store(float x) { return floatToHalf(x); }
};
template <>
struct Traits<Bf16Tag> {
  using Store = uint16_t;
  using Calc = float;
  static float load(uint16_t x) { return bf16ToFloat(x); }
  static uint16_t store(float x) { return floatToBf16(x); }
};

template <class T>
struct Type {
  using type = T;
};

template <class F>
void visitDtype(bcclDataType_t dt, F&& f) {
  switch (dt) {
    case bcclInt8:
      return f(Type<int8_t>{});
    case bcclUint8:
      return f(Type<uint8_t>{});
    case bcclInt32:
      return f(Type<int32_t>{});
    case bcclUint32:
      return f(Type<uint32_t>{});
    case bcclInt64:
      return f(Type<int64_t>{});
    case bcclUint64:
      return f(Type<uint64_t>{});
    case bcclFloat16:
      return f(Type<HalfTag>{});
    case bcclFloat32:
      return f(Type<float>{});
    case bcclFloat64:
      return f(Type<double>{});
    case bcclBfloat16:
      return f(Type<Bf16Tag>{});
    default:
      FAIL() << "bad dtype " << int(dt);
  }
}

// Integer sum/prod wrap modulo 2^bits: computed in uint64_t and truncated.
template <class C>
C refCombine(bcclRedOp_t op, C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    if ((op == bcclMax || op == bcclMin) && (std::isnan(a) || std::isnan(b))) {
      return std::numeric_limits<C>::quiet_NaN();
    }
  }
  switch (op) {
    case bcclSum:
    case bcclAvg:
      if constexpr (std::is_integral_v<C>) return C(uint64_t(a) + uint64_t(b));
      return a + b;
    case bcclProd:
      if constexpr (std::is_integral_v<C>) return C(uint64_t(a) * uint64_t(b));
      return a * b;
    case bcclMax:
      return a > b ? a : b;
    case bcclMin:
      return a < b ? a : b;
    default:
      return C();
  }
}

template <class T>
bool sameValue(typename Traits<T>::Store x, typename Traits<T>::Store y) {
  using C = typename Traits<T>::Calc;
  if constexpr (std::is_floating_point_v<C>) {
    const C cx = Traits<T>::load(x), cy = Traits<T>::load(y);
    if (std::isnan(cx) || std::isnan(cy)) return std::isnan(cx) && std::isnan(cy);
  }
  return std::memcmp(&x, &y, sizeof x) == 0;  // bitwise, so -0 vs +0 counts
}

// splitmix64: much cheaper than <random>'s distributions, which matters for the
// million-element cases under the sanitizers.
uint64_t nextRandom(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <class T>
void fillRandom(std::vector<typename Traits<T>::Store>& v, uint64_t& state) {
  using S = typename Traits<T>::Store;
  using C = typename Traits<T>::Calc;
  for (S& x : v) {
    const uint64_t bits = nextRandom(state);
    if constexpr (std::is_floating_point_v<C>) {
      const uint64_t p = (bits >> 56) % 100;
      if (p < 80) {
        // Moderate values in [-128, 128) with fraction bits, so sums and products round.
        x = Traits<T>::store(C(int64_t(bits & 0xffffff) - 0x800000) * C(1.0 / 65536));
      } else if (p < 95) {
        std::memcpy(&x, &bits, sizeof x);  // anything: huge, tiny, subnormal, NaN, Inf
      } else {
        const C specials[] = {C(0),
                              -C(0),
                              std::numeric_limits<C>::infinity(),
                              -std::numeric_limits<C>::infinity(),
                              std::numeric_limits<C>::quiet_NaN(),
                              C(1),
                              C(-1)};
        x = Traits<T>::store(specials[(bits >> 24) % 7]);
      }
    } else {
      std::memcpy(&x, &bits, sizeof x);
    }
  }
}

// Runs one dtype/op/count out of place, with dst == a and with dst == b, all from the same
// inputs and reference.
template <class T>
void checkReduce(bcclDataType_t dt, bcclRedOp_t op, size_t count, uint64_t seed) {
  using S = typename Traits<T>::Store;
  // An odd element offset makes the kernels start unaligned; the guard elements either side
  // catch a head or a vector tail that writes out of bounds.
  const size_t off = count & 1, guard = 16, total = off + count + guard;
  std::vector<S> a0(total), b0(total), d0(total);
  fillRandom<T>(a0, seed);
  fillRandom<T>(b0, seed);
  std::memset(d0.data(), 0xa5, total * sizeof(S));
  std::vector<S> want(count);
  for (size_t i = 0; i < count; ++i) {
    want[i] = Traits<T>::store(
        refCombine(op, Traits<T>::load(a0[off + i]), Traits<T>::load(b0[off + i])));
  }
  std::vector<S> a, b, d;
  enum Mode { kOutOfPlace, kDstIsA, kDstIsB };
  for (Mode mode : {kOutOfPlace, kDstIsA, kDstIsB}) {
    SCOPED_TRACE(mode == kOutOfPlace ? "out of place" : mode == kDstIsA ? "dst == a" : "dst == b");
    a = a0;
    b = b0;
    d = d0;
    std::vector<S>& out = mode == kDstIsA ? a : mode == kDstIsB ? b : d;
    const std::vector<S>& before = mode == kDstIsA ? a0 : mode == kDstIsB ? b0 : d0;
    reduceInto(out.data() + off, a.data() + off, b.data() + off, count, dt, op);
    size_t bad = 0;
    for (size_t i = 0; i < count && bad < 5; ++i) {
      if (!sameValue<T>(out[off + i], want[i])) {
        ++bad;
        ADD_FAILURE() << "element " << i << " of " << count << ": got " << +out[off + i] << " want "
                      << +want[i];
      }
    }
    EXPECT_EQ(std::memcmp(out.data(), before.data(), off * sizeof(S)), 0) << "wrote before";
    EXPECT_EQ(std::memcmp(out.data() + off + count, before.data() + off + count, guard * sizeof(S)),
              0)
        << "wrote past the end";
    if (mode != kDstIsA) {
      EXPECT_EQ(std::memcmp(a.data(), a0.data(), total * sizeof(S)), 0) << "input a changed";
    }
    if (mode != kDstIsB) {
      EXPECT_EQ(std::memcmp(b.data(), b0.data(), total * sizeof(S)), 0) << "input b changed";
    }
  }
}

std::vector<std::string> availableIsas() {
  std::vector<std::string> isas = {"portable"};
  if (setReduceIsa("avx2")) isas.push_back("avx2");
  setReduceIsa("auto");
  return isas;
}

class ReduceMatrix
    : public ::testing::TestWithParam<std::tuple<std::string, bcclDataType_t, bcclRedOp_t>> {
 protected:
  void SetUp() override { ASSERT_TRUE(setReduceIsa(std::get<0>(GetParam()).c_str())); }
  void TearDown() override { setReduceIsa("auto"); }
};

TEST_P(ReduceMatrix, MatchesScalarReference) {
  const bcclDataType_t dt = std::get<1>(GetParam());
  const bcclRedOp_t op = std::get<2>(GetParam());
  ASSERT_STREQ(reduceIsa(), std::get<0>(GetParam()).c_str());
  uint64_t seed = 1 + dt * 16 + op;
  for (size_t count :
       {size_t(0), size_t(1), size_t(7), size_t(16), size_t(33), size_t(4096), size_t(1000003)}) {
    SCOPED_TRACE("count " + std::to_string(count));
    visitDtype(dt, [&](auto t) { checkReduce<typename decltype(t)::type>(dt, op, count, seed++); });
  }
}

std::string matrixName(
    const ::testing::TestParamInfo<std::tuple<std::string, bcclDataType_t, bcclRedOp_t>>& info) {
  return std::get<0>(info.param) + "_" + dtypeName(std::get<1>(info.param)) + "_" +
         redOpName(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    AllTypesAndOps, ReduceMatrix,
    ::testing::Combine(::testing::ValuesIn(availableIsas()),
                       ::testing::Values(bcclInt8, bcclUint8, bcclInt32, bcclUint32, bcclInt64,
                                         bcclUint64, bcclFloat16, bcclFloat32, bcclFloat64,
                                         bcclBfloat16),
                       ::testing::Values(bcclSum, bcclProd, bcclMax, bcclMin, bcclAvg)),
    matrixName);

// ---- specific semantics, on whichever kernel set the CPU picks ---------------------------

TEST(Reduce, IntegerSumAndProdWrapAround) {
  int8_t a8[] = {127, -128, 100}, b8[] = {1, -1, 100}, d8[3];
  reduceInto(d8, a8, b8, 3, bcclInt8, bcclSum);
  EXPECT_EQ(d8[0], -128);
  EXPECT_EQ(d8[1], 127);
  EXPECT_EQ(d8[2], -56);
  uint8_t u8a[] = {255, 16}, u8b[] = {1, 16}, u8d[2];
  reduceInto(u8d, u8a, u8b, 2, bcclUint8, bcclSum);
  EXPECT_EQ(u8d[0], 0);
  reduceInto(u8d, u8a, u8b, 2, bcclUint8, bcclProd);
  EXPECT_EQ(u8d[1], 0);  // 256 wraps
  int32_t a32[] = {INT32_MAX, INT32_MIN, 65536}, b32[] = {1, -1, 65536}, d32[3];
  reduceInto(d32, a32, b32, 3, bcclInt32, bcclSum);
  EXPECT_EQ(d32[0], INT32_MIN);
  EXPECT_EQ(d32[1], INT32_MAX);
  reduceInto(d32, a32, b32, 3, bcclInt32, bcclProd);
  EXPECT_EQ(d32[2], 0);  // 2^32 wraps
  EXPECT_EQ(d32[0], INT32_MAX);
  int64_t a64[] = {INT64_MAX, int64_t(1) << 62}, b64[] = {1, 4}, d64[2];
  reduceInto(d64, a64, b64, 2, bcclInt64, bcclSum);
  EXPECT_EQ(d64[0], INT64_MIN);
  reduceInto(d64, a64, b64, 2, bcclInt64, bcclProd);
  EXPECT_EQ(d64[1], 0);
  uint64_t u64a[] = {UINT64_MAX}, u64b[] = {2}, u64d[1];
  reduceInto(u64d, u64a, u64b, 1, bcclUint64, bcclProd);
  EXPECT_EQ(u64d[0], UINT64_MAX - 1);
}

TEST(Reduce, SignedMinMaxCompareSigned) {
  int32_t a[] = {-5, 3}, b[] = {2, -7}, d[2];
  reduceInto(d, a, b, 2, bcclInt32, bcclMax);
  EXPECT_EQ(d[0], 2);
  EXPECT_EQ(d[1], 3);
  reduceInto(d, a, b, 2, bcclInt32, bcclMin);
  EXPECT_EQ(d[0], -5);
  EXPECT_EQ(d[1], -7);
  uint64_t ua[] = {UINT64_MAX}, ub[] = {1}, ud[1];
  reduceInto(ud, ua, ub, 1, bcclUint64, bcclMax);
  EXPECT_EQ(ud[0], UINT64_MAX);
}

TEST(Reduce, MinMaxPropagateNanFromEitherSide) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Enough elements that both the vector body and the tail see a NaN on each side.
  std::vector<float> a(40, 1.0f), b(40, 2.0f), d(40);
  a[3] = nan;
  b[5] = nan;
  a[37] = nan;
  b[38] = nan;
  for (bcclRedOp_t op : {bcclMax, bcclMin}) {
    reduceInto(d.data(), a.data(), b.data(), d.size(), bcclFloat32, op);
    for (size_t i = 0; i < d.size(); ++i) {
      const bool wantNan = i == 3 || i == 5 || i == 37 || i == 38;
      EXPECT_EQ(std::isnan(d[i]), wantNan) << redOpName(op) << " " << i;
    }
    EXPECT_EQ(d[0], op == bcclMax ? 2.0f : 1.0f);
  }
  std::vector<uint16_t> ha(20, floatToHalf(1.0f)), hb(20, floatToHalf(-1.0f)), hd(20);
  ha[2] = 0x7e00;
  hb[17] = 0xfe00;
  reduceInto(hd.data(), ha.data(), hb.data(), hd.size(), bcclFloat16, bcclMax);
  EXPECT_TRUE(std::isnan(halfToFloat(hd[2])));
  EXPECT_TRUE(std::isnan(halfToFloat(hd[17])));
  EXPECT_EQ(hd[0], floatToHalf(1.0f));
  std::vector<uint16_t> ba(20, floatToBf16(1.0f)), bb(20, floatToBf16(-1.0f)), bd(20);
  bb[2] = 0x7fc0;
  reduceInto(bd.data(), ba.data(), bb.data(), bd.size(), bcclBfloat16, bcclMin);
  EXPECT_TRUE(std::isnan(bf16ToFloat(bd[2])));
  EXPECT_EQ(bd[0], floatToBf16(-1.0f));
}

TEST(Reduce, MinMaxOfSignedZerosReturnSecondOperand) {
  const double a[] = {-0.0, 0.0}, b[] = {0.0, -0.0};
  double d[2];
  reduceInto(d, a, b, 2, bcclFloat64, bcclMin);
  EXPECT_FALSE(std::signbit(d[0]));
  EXPECT_TRUE(std::signbit(d[1]));
  reduceInto(d, a, b, 2, bcclFloat64, bcclMax);
  EXPECT_FALSE(std::signbit(d[0]));
  EXPECT_TRUE(std::signbit(d[1]));
}

TEST(Reduce, HalfSumRoundsOnceToNearestEven) {
  // 2048 + 1 is a tie between 2048 and 2050 (half spacing is 2 there): even wins.
  uint16_t a[] = {floatToHalf(2048.0f), floatToHalf(2048.0f), floatToHalf(65504.0f)};
  uint16_t b[] = {floatToHalf(1.0f), floatToHalf(3.0f), floatToHalf(16.0f)};
  uint16_t d[3];
  reduceInto(d, a, b, 3, bcclFloat16, bcclSum);
  EXPECT_EQ(halfToFloat(d[0]), 2048.0f);
  EXPECT_EQ(halfToFloat(d[1]), 2052.0f);
  EXPECT_EQ(d[2], 0x7c00);  // 65520 overflows
  uint16_t ba[] = {floatToBf16(256.0f)}, bb[] = {floatToBf16(1.0f)}, bd[1];
  reduceInto(bd, ba, bb, 1, bcclBfloat16, bcclSum);
  EXPECT_EQ(bf16ToFloat(bd[0]), 256.0f);  // 257 ties to even 256
}

TEST(Reduce, AvgReducesAsSum) {
  const int32_t a[] = {1, -9}, b[] = {2, 4};
  int32_t d[2];
  reduceInto(d, a, b, 2, bcclInt32, bcclAvg);
  EXPECT_EQ(d[0], 3);
  EXPECT_EQ(d[1], -5);
}

TEST(Reduce, InvalidArgumentsLeaveDestinationAlone) {
  const float a[] = {1.0f}, b[] = {2.0f};
  float d[] = {7.0f};
  reduceInto(d, a, b, 1, bcclDataType_t(bcclNumTypes), bcclSum);
  // Casting a value outside the enum's range (here 0..15) would itself be undefined
  // behaviour in C++, so only in-range invalid values are tried.
  reduceInto(d, a, b, 1, bcclDataType_t(15), bcclSum);
  reduceInto(d, a, b, 1, bcclFloat32, bcclRedOp_t(bcclNumOps));
  reduceInto(nullptr, nullptr, nullptr, 0, bcclFloat32, bcclSum);
  EXPECT_EQ(d[0], 7.0f);
}

TEST(Reduce, IsaSelection) {
  EXPECT_FALSE(setReduceIsa("bogus"));
  EXPECT_FALSE(setReduceIsa(nullptr));
  EXPECT_TRUE(setReduceIsa("portable"));
  EXPECT_STREQ(reduceIsa(), "portable");
  EXPECT_TRUE(setReduceIsa("auto"));
  const std::string isa = reduceIsa();
  EXPECT_TRUE(isa == "portable" || isa == "avx2") << isa;
}

// ---- scaleDivide ---------------------------------------------------------------------------

template <class T>
void checkScale(bcclDataType_t dt, int divisor, size_t count, bool inPlace) {
  using S = typename Traits<T>::Store;
  using C = typename Traits<T>::Calc;
  uint64_t seed = count * 31 + uint64_t(divisor);
  std::vector<S> src(count), dst(count);
  fillRandom<T>(src, seed);
  if constexpr (std::is_integral_v<S> && std::is_same_v<S, T>) {
    // The extremes are where a float-based shortcut would go wrong.
    if (count >= 4) {
      src[0] = std::numeric_limits<T>::max();
      src[1] = std::numeric_limits<T>::min();
      src[2] = T(std::numeric_limits<T>::max() - 1);
      src[3] = T(std::numeric_limits<T>::min() + 1);
    }
  }
  std::vector<S> want(count);
  for (size_t i = 0; i < count; ++i) {
    if constexpr (std::is_integral_v<C>) {
      // C promotes to (at least) int before dividing; do it in 64 bits to keep it simple.
      using W = std::conditional_t<std::is_signed_v<C>, int64_t, uint64_t>;
      want[i] = S(W(src[i]) / W(divisor));
    } else {
      want[i] = Traits<T>::store(Traits<T>::load(src[i]) / C(divisor));
    }
  }
  S* out = inPlace ? src.data() : dst.data();
  scaleDivide(out, src.data(), count, dt, divisor);
  for (size_t i = 0; i < count; ++i) {
    ASSERT_TRUE(sameValue<T>(out[i], want[i])) << dtypeName(dt) << " / " << divisor << " at " << i
                                               << ": got " << +out[i] << " want " << +want[i];
  }
}

class ScaleDivide : public ::testing::TestWithParam<std::tuple<std::string, bcclDataType_t>> {
 protected:
  void SetUp() override { ASSERT_TRUE(setReduceIsa(std::get<0>(GetParam()).c_str())); }
  void TearDown() override { setReduceIsa("auto"); }
};

TEST_P(ScaleDivide, MatchesCDivision) {
  const bcclDataType_t dt = std::get<1>(GetParam());
  for (int divisor : {1, 2, 3, 7, 8, 1000, 65537, INT32_MAX}) {
    for (size_t count : {size_t(0), size_t(1), size_t(7), size_t(33), size_t(100003)}) {
      for (bool inPlace : {false, true}) {
        visitDtype(dt, [&](auto t) {
          checkScale<typename decltype(t)::type>(dt, divisor, count, inPlace);
        });
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllTypes, ScaleDivide,
    ::testing::Combine(::testing::ValuesIn(availableIsas()),
                       ::testing::Values(bcclInt8, bcclUint8, bcclInt32, bcclUint32, bcclInt64,
                                         bcclUint64, bcclFloat16, bcclFloat32, bcclFloat64,
                                         bcclBfloat16)),
    [](const ::testing::TestParamInfo<std::tuple<std::string, bcclDataType_t>>& info) {
      return std::get<0>(info.param) + "_" + dtypeName(std::get<1>(info.param));
    });

TEST(ScaleDivideSemantics, IntegersTruncateTowardZero) {
  int32_t v[] = {7, -7, 8, -8, INT32_MIN, INT32_MAX};
  scaleDivide(v, v, 6, bcclInt32, 2);
  EXPECT_EQ(v[0], 3);
  EXPECT_EQ(v[1], -3);
  EXPECT_EQ(v[2], 4);
  EXPECT_EQ(v[3], -4);
  EXPECT_EQ(v[4], INT32_MIN / 2);
  EXPECT_EQ(v[5], INT32_MAX / 2);
  int64_t w[] = {-5, INT64_MAX};
  scaleDivide(w, w, 2, bcclInt64, 3);
  EXPECT_EQ(w[0], -1);
  EXPECT_EQ(w[1], INT64_MAX / 3);
  uint32_t u[] = {UINT32_MAX, 5};
  scaleDivide(u, u, 2, bcclUint32, 3);
  EXPECT_EQ(u[0], UINT32_MAX / 3);
  EXPECT_EQ(u[1], 1u);
  float f[] = {1.0f, -3.0f};
  scaleDivide(f, f, 2, bcclFloat32, 3);
  EXPECT_EQ(f[0], 1.0f / 3.0f);
  EXPECT_EQ(f[1], -1.0f);
  uint16_t h[] = {floatToHalf(1.0f)};
  scaleDivide(h, h, 1, bcclFloat16, 3);
  EXPECT_EQ(h[0], floatToHalf(1.0f / 3.0f));
}

TEST(ScaleDivideSemantics, DivisorBelowTwoCopies) {
  const int32_t src[] = {5, -6};
  int32_t dst[] = {0, 0};
  scaleDivide(dst, src, 2, bcclInt32, 1);
  EXPECT_EQ(dst[0], 5);
  EXPECT_EQ(dst[1], -6);
  dst[0] = 0;
  scaleDivide(dst, src, 2, bcclInt32, 0);
  EXPECT_EQ(dst[0], 5);
}

// ---- names -----------------------------------------------------------------------------------

TEST(Dtype, SizesAndValidity) {
  const size_t sizes[] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2};
  for (int t = 0; t < bcclNumTypes; ++t) {
    EXPECT_TRUE(isValidDtype(t));
    EXPECT_EQ(dtypeSize(bcclDataType_t(t)), sizes[t]) << t;
  }
  EXPECT_FALSE(isValidDtype(-1));
  EXPECT_FALSE(isValidDtype(bcclNumTypes));
  EXPECT_EQ(dtypeSize(bcclDataType_t(bcclNumTypes)), 0u);
  EXPECT_EQ(dtypeSize(bcclDataType_t(15)), 0u);
  EXPECT_STREQ(dtypeName(bcclDataType_t(bcclNumTypes)), "unknown");
  for (int op = 0; op < bcclNumOps; ++op) EXPECT_TRUE(isValidRedOp(op));
  EXPECT_FALSE(isValidRedOp(-1));
  EXPECT_FALSE(isValidRedOp(bcclNumOps));
  EXPECT_STREQ(redOpName(bcclRedOp_t(bcclNumOps)), "unknown");
}

TEST(Dtype, NamesRoundTrip) {
  const char* names[] = {"int8",   "uint8", "int32", "uint32", "int64",
                         "uint64", "half",  "float", "double", "bfloat16"};
  for (int t = 0; t < bcclNumTypes; ++t) {
    EXPECT_STREQ(dtypeName(bcclDataType_t(t)), names[t]);
    bcclDataType_t back = bcclNumTypes;
    ASSERT_TRUE(dtypeFromName(dtypeName(bcclDataType_t(t)), &back));
    EXPECT_EQ(back, t);
  }
  const char* ops[] = {"sum", "prod", "max", "min", "avg"};
  for (int op = 0; op < bcclNumOps; ++op) {
    EXPECT_STREQ(redOpName(bcclRedOp_t(op)), ops[op]);
    bcclRedOp_t back = bcclNumOps;
    ASSERT_TRUE(redOpFromName(ops[op], &back));
    EXPECT_EQ(back, op);
  }
}

TEST(Dtype, AliasesAndUnknownNames) {
  const std::pair<const char*, bcclDataType_t> aliases[] = {
      {"fp16", bcclFloat16},    {"float16", bcclFloat16}, {"bf16", bcclBfloat16},
      {"float32", bcclFloat32}, {"fp32", bcclFloat32},    {"float64", bcclFloat64},
      {"int", bcclInt32},       {"char", bcclInt8},       {"FLOAT", bcclFloat32},
      {"BF16", bcclBfloat16}};
  for (const auto& [name, want] : aliases) {
    bcclDataType_t got = bcclNumTypes;
    EXPECT_TRUE(dtypeFromName(name, &got)) << name;
    EXPECT_EQ(got, want) << name;
  }
  bcclDataType_t dt = bcclUint64;
  EXPECT_FALSE(dtypeFromName("float128", &dt));
  EXPECT_FALSE(dtypeFromName("", &dt));
  EXPECT_FALSE(dtypeFromName(nullptr, &dt));
  EXPECT_EQ(dt, bcclUint64);
  bcclRedOp_t op = bcclMin;
  EXPECT_FALSE(redOpFromName("mean", &op));
  EXPECT_FALSE(redOpFromName(nullptr, &op));
  EXPECT_EQ(op, bcclMin);
  EXPECT_TRUE(redOpFromName("MAX", &op));
  EXPECT_EQ(op, bcclMax);
}

}  // namespace
}  // namespace bccl
