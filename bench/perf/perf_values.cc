// Dtypes and logical values for the perf tools' checks (perf_values.h), and Inputs
// (perf_common.h): which values every rank feeds a collective.
#include "perf_values.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "perf_common.h"

namespace bcclperf {

// ---- fp16 / bf16 ------------------------------------------------------------------------------

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x1ffu));
  // 65520 is the midpoint between the largest half (65504) and 2^16; ties go to even = inf.
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < 0x38800000u) {
    // Below 2^-14 the half is subnormal, counted in units of 2^-24. Scaling by a power of two is
    // exact, so one nearbyint (ties-to-even by default) does the rounding.
    float af;
    std::memcpy(&af, &a, sizeof af);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(af * 16777216.0f)));
  }
  const uint32_t r = a - 0x38000000u;  // rebias the exponent from 127 to 15
  uint32_t h = r >> 13;
  const uint32_t rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  const uint32_t bits =
      exp == 31 ? (sign | 0x7f800000u | (man << 13)) : (sign | ((exp + 112u) << 23) | (man << 13));
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t FloatToBfloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float Bfloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// ---- data types -------------------------------------------------------------------------------

const TypeInfo kTypes[bcclNumTypes] = {
    {bcclInt8, "int8", 1, false, true, 127},
    {bcclUint8, "uint8", 1, false, false, 255},
    {bcclInt32, "int32", 4, false, true, INT32_MAX},
    {bcclUint32, "uint32", 4, false, false, UINT32_MAX},
    {bcclInt64, "int64", 8, false, true, int64_t{1} << 62},
    {bcclUint64, "uint64", 8, false, false, int64_t{1} << 62},
    {bcclFloat16, "half", 2, true, true, 2048},
    {bcclFloat32, "float", 4, true, true, int64_t{1} << 24},
    {bcclFloat64, "double", 8, true, true, int64_t{1} << 53},
    {bcclBfloat16, "bfloat16", 2, true, true, 256},
};

const TypeInfo& Info(bcclDataType_t t) { return kTypes[t]; }

const char* const kOpNames[bcclNumOps] = {"sum", "prod", "max", "min", "avg"};

void Store(bcclDataType_t t, void* base, size_t i, int64_t v) {
  switch (t) {
    case bcclInt8:
      static_cast<int8_t*>(base)[i] = static_cast<int8_t>(v);
      break;
    case bcclUint8:
      static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(v);
      break;
    case bcclInt32:
      static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v);
      break;
    case bcclUint32:
      static_cast<uint32_t*>(base)[i] = static_cast<uint32_t>(v);
      break;
    case bcclInt64:
      static_cast<int64_t*>(base)[i] = v;
      break;
    case bcclUint64:
      static_cast<uint64_t*>(base)[i] = static_cast<uint64_t>(v);
      break;
    case bcclFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToHalf(static_cast<float>(v));
      break;
    case bcclFloat32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      break;
    case bcclFloat64:
      static_cast<double*>(base)[i] = static_cast<double>(v);
      break;
    case bcclBfloat16:
      static_cast<uint16_t*>(base)[i] = FloatToBfloat16(static_cast<float>(v));
      break;
    default:
      break;
  }
}

// For diagnostics and for comparing floats by value.
double LoadDouble(bcclDataType_t t, const void* base, size_t i) {
  switch (t) {
    case bcclInt8:
      return static_cast<const int8_t*>(base)[i];
    case bcclUint8:
      return static_cast<const uint8_t*>(base)[i];
    case bcclInt32:
      return static_cast<const int32_t*>(base)[i];
    case bcclUint32:
      return static_cast<const uint32_t*>(base)[i];
    case bcclInt64:
      return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case bcclUint64:
      return static_cast<double>(static_cast<const uint64_t*>(base)[i]);
    case bcclFloat16:
      return HalfToFloat(static_cast<const uint16_t*>(base)[i]);
    case bcclFloat32:
      return static_cast<const float*>(base)[i];
    case bcclFloat64:
      return static_cast<const double*>(base)[i];
    case bcclBfloat16:
      return Bfloat16ToFloat(static_cast<const uint16_t*>(base)[i]);
    default:
      return 0;
  }
}

std::string FormatElem(bcclDataType_t t, const void* base, size_t i) {
  char buf[64];
  const unsigned char* p = static_cast<const unsigned char*>(base) + i * Info(t).size;
  if (t == bcclInt64) {
    int64_t v;
    std::memcpy(&v, p, sizeof v);
    std::snprintf(buf, sizeof buf, "%" PRId64, v);
  } else if (t == bcclUint64) {
    uint64_t v;
    std::memcpy(&v, p, sizeof v);
    std::snprintf(buf, sizeof buf, "%" PRIu64, v);
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", LoadDouble(t, base, i));
  }
  return buf;
}

// Integers must match bit for bit. Floats too, except that +0 and -0 are the same result.
bool SameElem(bcclDataType_t t, const void* a, const void* b, size_t i) {
  const size_t ts = Info(t).size;
  if (std::memcmp(static_cast<const char*>(a) + i * ts, static_cast<const char*>(b) + i * ts, ts) ==
      0) {
    return true;
  }
  return Info(t).is_float && LoadDouble(t, a, i) == LoadDouble(t, b, i);
}

namespace {

// ---- input values -----------------------------------------------------------------------------

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9E3779B97F4A7C15ull + b * 0xC2B2AE3D27D4EB4Full + 0x165667B19E3779F9ull;
  x ^= x >> 32;
  x *= 0xD6E8FEB86659FD93ull;
  x ^= x >> 32;
  return x;
}

// Salts far from any rank number, so per-index choices are independent of per-rank values.
constexpr uint64_t kSaltTwos = ~uint64_t{0};
constexpr uint64_t kSaltSign = ~uint64_t{1};
constexpr uint64_t kSaltBase = ~uint64_t{2};
constexpr uint64_t kSaltDelta = ~uint64_t{3};

// A value in [-m, m] (signed) or [0, m]. Unsigned arithmetic because 2m+1 may exceed INT64_MAX.
int64_t Spread(uint64_t h, int64_t m, bool is_signed) {
  if (m <= 0) return 0;
  const uint64_t um = static_cast<uint64_t>(m);
  if (!is_signed) return static_cast<int64_t>(h % (um + 1));
  return static_cast<int64_t>(h % (2 * um + 1) - um);
}

}  // namespace

Inputs::Inputs(bcclDataType_t dtype, bool reduces, bcclRedOp_t op, int rank, int nranks, int root)
    : op_(op), rank_(rank), nranks_(nranks), root_(root) {
  const TypeInfo& t = Info(dtype);
  is_signed_ = t.is_signed;
  limit_ = t.limit;
  per_rank_ = limit_ / nranks;
  max_twos_ = 0;
  while (max_twos_ < 62 && (int64_t{1} << (max_twos_ + 1)) <= limit_) ++max_twos_;
  if (!reduces || op == bcclMax || op == bcclMin) {
    scheme_ = Scheme::kSpread;  // nothing accumulates, so the whole exact range is usable
  } else if (op == bcclProd) {
    scheme_ = Scheme::kProd;
  } else if (op == bcclAvg) {
    scheme_ = Scheme::kAvg;
  } else {
    scheme_ = Scheme::kSum;
  }
}

int64_t Inputs::At(int rank, size_t index) const {
  const uint64_t r = static_cast<uint64_t>(rank);
  switch (scheme_) {
    case Scheme::kSpread:
      return Spread(Mix(r, index), limit_, is_signed_);
    case Scheme::kSum:
      // Any partial sum is bounded by nranks * per_rank_ <= limit_, so every summation order is
      // exact, including for half and bfloat16.
      return Spread(Mix(r, index), per_rank_, is_signed_);
    case Scheme::kProd: {
      // Element `index` gets factors of 2 from `twos` consecutive ranks (starting at rank
      // index % n) and 1 elsewhere; signed types sometimes negate one factor. The product is
      // +-2^twos, exact in every type.
      const uint64_t n = static_cast<uint64_t>(nranks_);
      const uint64_t k = std::min<uint64_t>(static_cast<uint64_t>(max_twos_), n);
      const uint64_t twos = Mix(kSaltTwos, index) % (k + 1);
      const uint64_t slot = (r + n - index % n) % n;
      int64_t v = slot < twos ? 2 : 1;
      if (is_signed_ && slot == 0 && (Mix(kSaltSign, index) & 1u)) v = -v;
      return v;
    }
    case Scheme::kAvg: {
      // Ranks come in pairs holding base+d and base-d (an odd last rank holds base), so the
      // sum is exactly nranks*base and the average is base in every type with no rounding
      // question, while each rank's data still differs.
      const int64_t base = Spread(Mix(kSaltBase, index), per_rank_ / 2, is_signed_);
      const int64_t abs_base = base < 0 ? -base : base;
      const int64_t room = is_signed_ ? per_rank_ - abs_base : std::min(base, per_rank_ - base);
      const int64_t d =
          static_cast<int64_t>(Mix(kSaltDelta, index) % (static_cast<uint64_t>(room) + 1));
      if (nranks_ % 2 == 1 && rank == nranks_ - 1) return base;
      return rank % 2 == 0 ? base + d : base - d;
    }
  }
  return 0;
}

int64_t Inputs::Reduced(size_t index) const {
  int64_t acc = At(0, index);
  for (int r = 1; r < nranks_; ++r) {
    const int64_t v = At(r, index);
    switch (op_) {
      case bcclProd:
        acc *= v;
        break;
      case bcclMax:
        acc = std::max(acc, v);
        break;
      case bcclMin:
        acc = std::min(acc, v);
        break;
      default:
        acc += v;
        break;
    }
  }
  if (op_ == bcclAvg) acc /= nranks_;  // exact by construction; C division otherwise
  return acc;
}

}  // namespace bcclperf
