// Implementation of the test data helpers. The fp16/bf16 conversions are written here rather
// than borrowed from the library so a conversion bug in the library cannot hide itself.
#include "support/data.h"

#include <cstring>
#include <sstream>

namespace bccltest {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <typename T>
void Store(T v, void* dst) {
  std::memcpy(dst, &v, sizeof v);
}

template <typename T>
T Load(const void* src) {
  T v;
  std::memcpy(&v, src, sizeof v);
  return v;
}

}  // namespace

size_t TypeSize(bcclDataType_t dt) {
  switch (dt) {
    case bcclInt8:
    case bcclUint8:
      return 1;
    case bcclFloat16:
    case bcclBfloat16:
      return 2;
    case bcclInt32:
    case bcclUint32:
    case bcclFloat32:
      return 4;
    case bcclInt64:
    case bcclUint64:
    case bcclFloat64:
      return 8;
    default:
      return 0;
  }
}

const char* TypeName(bcclDataType_t dt) {
  switch (dt) {
    case bcclInt8:
      return "int8";
    case bcclUint8:
      return "uint8";
    case bcclInt32:
      return "int32";
    case bcclUint32:
      return "uint32";
    case bcclInt64:
      return "int64";
    case bcclUint64:
      return "uint64";
    case bcclFloat16:
      return "float16";
    case bcclFloat32:
      return "float32";
    case bcclFloat64:
      return "float64";
    case bcclBfloat16:
      return "bfloat16";
    default:
      return "?";
  }
}

const char* OpName(bcclRedOp_t op) {
  switch (op) {
    case bcclSum:
      return "sum";
    case bcclProd:
      return "prod";
    case bcclMax:
      return "max";
    case bcclMin:
      return "min";
    case bcclAvg:
      return "avg";
    default:
      return "?";
  }
}

bool IsUnsigned(bcclDataType_t dt) {
  return dt == bcclUint8 || dt == bcclUint32 || dt == bcclUint64;
}

bool IsFloat(bcclDataType_t dt) {
  return dt == bcclFloat16 || dt == bcclFloat32 || dt == bcclFloat64 || dt == bcclBfloat16;
}

// Round-to-nearest-even, after F. Giesen's public-domain float_to_half_fast3_rtne.
uint16_t FloatToHalf(float f) {
  const uint32_t kF32Inf = 255u << 23;
  const uint32_t kF16Max = (127u + 16u) << 23;
  const uint32_t kDenormMagic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t x = Bits(f);
  const uint32_t sign = x & 0x80000000u;
  x ^= sign;
  uint16_t out;
  if (x >= kF16Max) {
    out = x > kF32Inf ? 0x7e00 : 0x7c00;
  } else if (x < (113u << 23)) {
    float denorm = FromBits(x) + FromBits(kDenormMagic);
    out = static_cast<uint16_t>(Bits(denorm) - kDenormMagic);
  } else {
    const uint32_t mantOdd = (x >> 13) & 1u;
    x += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;
    x += mantOdd;
    out = static_cast<uint16_t>(x >> 13);
  }
  return static_cast<uint16_t>(out | (sign >> 16));
}

float HalfToFloat(uint16_t h) {
  const uint32_t kShiftedExp = 0x7c00u << 13;
  uint32_t out = (h & 0x7fffu) << 13;
  const uint32_t exp = kShiftedExp & out;
  out += (127u - 15u) << 23;
  if (exp == kShiftedExp) {
    out += (128u - 16u) << 23;
  } else if (exp == 0) {
    out += 1u << 23;
    out = Bits(FromBits(out) - FromBits(113u << 23));
  }
  out |= (h & 0x8000u) << 16;
  return FromBits(out);
}

uint16_t FloatToBf16(float f) {
  uint32_t x = Bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float Bf16ToFloat(uint16_t h) { return FromBits(static_cast<uint32_t>(h) << 16); }

void Encode(bcclDataType_t dt, double v, void* dst) {
  switch (dt) {
    case bcclInt8:
      Store(static_cast<int8_t>(v), dst);
      break;
    case bcclUint8:
      Store(static_cast<uint8_t>(v), dst);
      break;
    case bcclInt32:
      Store(static_cast<int32_t>(v), dst);
      break;
    case bcclUint32:
      Store(static_cast<uint32_t>(v), dst);
      break;
    case bcclInt64:
      Store(static_cast<int64_t>(v), dst);
      break;
    case bcclUint64:
      Store(static_cast<uint64_t>(v), dst);
      break;
    case bcclFloat16:
      Store(FloatToHalf(static_cast<float>(v)), dst);
      break;
    case bcclFloat32:
      Store(static_cast<float>(v), dst);
      break;
    case bcclFloat64:
      Store(v, dst);
      break;
    case bcclBfloat16:
      Store(FloatToBf16(static_cast<float>(v)), dst);
      break;
    default:
      break;
  }
}

double Decode(bcclDataType_t dt, const void* src) {
  switch (dt) {
    case bcclInt8:
      return Load<int8_t>(src);
    case bcclUint8:
      return Load<uint8_t>(src);
    case bcclInt32:
      return Load<int32_t>(src);
    case bcclUint32:
      return Load<uint32_t>(src);
    case bcclInt64:
      return static_cast<double>(Load<int64_t>(src));
    case bcclUint64:
      return static_cast<double>(Load<uint64_t>(src));
    case bcclFloat16:
      return HalfToFloat(Load<uint16_t>(src));
    case bcclFloat32:
      return Load<float>(src);
    case bcclFloat64:
      return Load<double>(src);
    case bcclBfloat16:
      return Bf16ToFloat(Load<uint16_t>(src));
    default:
      return 0;
  }
}

int64_t ReduceInput(bcclDataType_t dt, bcclRedOp_t op, int nranks, int rank, size_t i) {
  const bool u = IsUnsigned(dt);
  const uint64_t r = static_cast<uint64_t>(rank);
  switch (op) {
    case bcclProd:
      // At most one rank contributes a 2 per element, so no integer type can overflow.
      if (i % 5 == 0 && r == (i / 5) % static_cast<uint64_t>(nranks)) return 2;
      if (!u && (i + 2 * r) % 3 == 0) return -1;
      return 1;
    case bcclAvg: {
      // Odd ranks subtract what their even neighbour adds; a lone last rank adds nothing, so
      // the sum is exactly nranks * base while single inputs are not multiples of nranks.
      auto deviation = [&](int64_t c) -> int64_t {
        if (rank % 2 == 1) return -c;
        return rank + 1 < nranks ? c : 0;
      };
      if (IsFloat(dt)) {
        const int64_t base = static_cast<int64_t>((i * 5 + 1) % 5) - 2;
        return nranks * (base + deviation(static_cast<int64_t>(i % 2) + 1));
      }
      const int64_t c = static_cast<int64_t>(i % 3) + 1;
      const int64_t base =
          u ? static_cast<int64_t>((i * 5 + 1) % 6) + 3 : static_cast<int64_t>((i * 5 + 1) % 9) - 4;
      return base + deviation(c);
    }
    default: {
      const int64_t s = static_cast<int64_t>((r * 7 + i * 13 + 3) % 9);
      return u ? s : s - 4;
    }
  }
}

int64_t ReduceExpected(bcclDataType_t dt, bcclRedOp_t op, int nranks, size_t i) {
  int64_t acc = ReduceInput(dt, op, nranks, 0, i);
  for (int r = 1; r < nranks; ++r) {
    const int64_t v = ReduceInput(dt, op, nranks, r, i);
    switch (op) {
      case bcclProd:
        acc *= v;
        break;
      case bcclMax:
        acc = v > acc ? v : acc;
        break;
      case bcclMin:
        acc = v < acc ? v : acc;
        break;
      default:
        acc += v;
        break;
    }
  }
  return op == bcclAvg ? acc / nranks : acc;
}

int64_t Pattern(int64_t id, size_t i) {
  return static_cast<int64_t>((static_cast<uint64_t>(id) * 37 + i * 11 + 5) % 97);
}

void FillReduceInput(bcclDataType_t dt, bcclRedOp_t op, int nranks, int rank, size_t first,
                     size_t count, void* dst) {
  const size_t es = TypeSize(dt);
  auto* out = static_cast<unsigned char*>(dst);
  for (size_t k = 0; k < count; ++k) {
    Encode(dt, static_cast<double>(ReduceInput(dt, op, nranks, rank, first + k)), out + k * es);
  }
}

std::vector<unsigned char> ExpectedReduction(bcclDataType_t dt, bcclRedOp_t op, int nranks,
                                             size_t count) {
  const size_t es = TypeSize(dt);
  std::vector<unsigned char> out(count * es);
  for (size_t i = 0; i < count; ++i) {
    Encode(dt, static_cast<double>(ReduceExpected(dt, op, nranks, i)), out.data() + i * es);
  }
  return out;
}

void FillPattern(bcclDataType_t dt, int64_t id, size_t count, void* dst) {
  const size_t es = TypeSize(dt);
  auto* out = static_cast<unsigned char*>(dst);
  for (size_t i = 0; i < count; ++i) {
    Encode(dt, static_cast<double>(Pattern(id, i)), out + i * es);
  }
}

std::string CompareElements(bcclDataType_t dt, const void* got, const void* want, size_t count,
                            size_t reportBase) {
  const size_t es = TypeSize(dt);
  if (count == 0 || std::memcmp(got, want, count * es) == 0) return "";
  const auto* g = static_cast<const unsigned char*>(got);
  const auto* w = static_cast<const unsigned char*>(want);
  std::ostringstream os;
  size_t bad = 0;
  for (size_t i = 0; i < count; ++i) {
    if (std::memcmp(g + i * es, w + i * es, es) == 0) continue;
    if (bad < 4) {
      os << (bad ? ", " : "") << "[" << reportBase + i << "] got " << Decode(dt, g + i * es)
         << " want " << Decode(dt, w + i * es);
    }
    ++bad;
  }
  os << " (" << bad << " of " << count << " elements differ)";
  return os.str();
}

GuardedBuffer::GuardedBuffer(bcclDataType_t dt, size_t count)
    : elem_(TypeSize(dt)),
      count_(count),
      bytes_((count + 2 * kGuardElems) * TypeSize(dt), kGuardByte) {
  FillGarbage();
}

void GuardedBuffer::FillGarbage() { std::memset(data(), kGarbageByte, bytes()); }

std::string GuardedBuffer::CheckGuards() const {
  const size_t guard = kGuardElems * elem_;
  for (size_t i = 0; i < guard; ++i) {
    if (bytes_[i] != kGuardByte) return "bytes before the buffer were overwritten";
    if (bytes_[bytes_.size() - 1 - i] != kGuardByte) {
      return "bytes after the buffer were overwritten";
    }
  }
  return "";
}

}  // namespace bccltest
