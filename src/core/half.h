// Scalar fp16 (IEEE binary16) and bf16 conversions. They exist so that every half-precision
// reduction rounds exactly once, the same way on every path. They are written without
// branches so that loops calling them auto-vectorise: every candidate result is computed and
// one is picked with a bit mask. (With a plain `?:`, GCC sinks the float add of the subnormal
// case into a branch and, as the add may trap, will not turn it back into a select.)
#ifndef BCCL_CORE_HALF_H_
#define BCCL_CORE_HALF_H_

#include <cstdint>
#include <cstring>

namespace bccl {

inline uint32_t floatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

namespace detail {
inline uint32_t pick(bool cond, uint32_t ifTrue, uint32_t ifFalse) {
  const uint32_t mask = 0u - uint32_t(cond);
  return (ifTrue & mask) | (ifFalse & ~mask);
}
}  // namespace detail

inline float halfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;  // exponent and mantissa
  const uint32_t shifted = em << 13;
  // Rebiasing the exponent (15 -> 127) is one add; Inf/NaN need the exponent to land on 255,
  // which keeps the NaN payload bits. Subnormals are em * 2^-24, exact in float.
  const uint32_t sub = floatBits(float(int32_t(em)) * 0x1p-24f);
  uint32_t r = shifted + detail::pick(em >= 0x7c00u, 224u << 23, 112u << 23);
  r = detail::pick(em < 0x0400u, sub, r);
  return bitsToFloat(r | sign);
}

inline uint16_t floatToHalf(float f) {
  const uint32_t x = floatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  // Normal range: rebias, then round to nearest even on the 13 dropped bits. A carry out of
  // the mantissa correctly bumps the exponent.
  const uint32_t n = ax - (112u << 23);
  uint32_t r = (n + 0x0fffu + ((n >> 13) & 1u)) >> 13;
  // Below 2^-14 the result is subnormal (or zero): adding 0.5f puts the value's 2^-24 units in
  // the low mantissa bits, and the FPU rounds to nearest even for us (bccl never changes the
  // default rounding mode). A result of 0x400 is the smallest normal, the right encoding.
  const uint32_t sub = floatBits(bitsToFloat(ax) + 0.5f) - 0x3f000000u;
  r = detail::pick(ax < 0x38800000u, sub, r);
  // 65520 is halfway between 65504 (max finite, odd mantissa) and 65536, so it and anything
  // above round to Inf.
  r = detail::pick(ax >= 0x477ff000u, 0x7c00u, r);
  // NaN: keep the top payload bits and force the quiet bit, as F16C's vcvtps2ph does.
  r = detail::pick(ax > 0x7f800000u, 0x7e00u | ((ax >> 13) & 0x3ffu), r);
  return uint16_t(r | sign);
}

inline float bf16ToFloat(uint16_t b) { return bitsToFloat(uint32_t(b) << 16); }

inline uint16_t floatToBf16(float f) {
  const uint32_t x = floatBits(f);
  // Round to nearest even on the low 16 bits; Inf and overflow come out right because the
  // carry walks into the exponent. A NaN must not be rounded (the carry could turn it into
  // Inf or flip its sign), so it gets no bias and its quiet bit set instead. Masks rather
  // than selects keep the vectorised loop in 32-bit lanes until the final narrowing.
  const uint32_t nanMask = 0u - uint32_t(int32_t(x & 0x7fffffffu) > 0x7f800000);
  const uint32_t bias = (0x7fffu + ((x >> 16) & 1u)) & ~nanMask;
  return uint16_t(((x | (nanMask & 0x00400000u)) + bias) >> 16);
}

}  // namespace bccl

#endif  // BCCL_CORE_HALF_H_
