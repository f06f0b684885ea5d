// Test data shared by every public-API test: per-dtype encoding (including fp16/bf16, which
// C++17 has no type for), input generators whose reductions stay exactly representable so
// results can be compared bit for bit, and buffers fenced by guard bytes so an overrun by the
// library is reported as a failure rather than silently corrupting the next case.
#ifndef BCCL_TESTS_SUPPORT_DATA_H_
#define BCCL_TESTS_SUPPORT_DATA_H_

#include <bccl/bccl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bccltest {

constexpr bcclDataType_t kAllTypes[] = {bcclInt8,    bcclUint8,   bcclInt32,   bcclUint32,
                                        bcclInt64,   bcclUint64,  bcclFloat16, bcclFloat32,
                                        bcclFloat64, bcclBfloat16};
constexpr bcclRedOp_t kAllOps[] = {bcclSum, bcclProd, bcclMax, bcclMin, bcclAvg};

size_t TypeSize(bcclDataType_t dt);
const char* TypeName(bcclDataType_t dt);
const char* OpName(bcclRedOp_t op);
bool IsUnsigned(bcclDataType_t dt);
bool IsFloat(bcclDataType_t dt);

uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBf16(float f);
float Bf16ToFloat(uint16_t h);

// Stores `v` as one element of `dt` at `dst` (integers are cast; floats are rounded to nearest).
void Encode(bcclDataType_t dt, double v, void* dst);
double Decode(bcclDataType_t dt, const void* src);

// Input of `rank` at global element `i` for a reduction with `op`. Chosen so that every partial
// and final result is a small integer: sums stay within +-64 (exact even in bf16), products are
// in {-2,-1,1,2}, and the sum for Avg is a multiple of nranks. For float types Avg inputs are
// themselves multiples of nranks, so dividing before or after summing is equally exact.
int64_t ReduceInput(bcclDataType_t dt, bcclRedOp_t op, int nranks, int rank, size_t i);
// The reduction of ReduceInput over all ranks at element `i`, computed in 64-bit integers.
int64_t ReduceExpected(bcclDataType_t dt, bcclRedOp_t op, int nranks, size_t i);
// A value that identifies (source id, element) for data-movement collectives; fits every dtype.
int64_t Pattern(int64_t id, size_t i);

// Fills `count` elements at `dst` with ReduceInput for elements first..first+count-1.
void FillReduceInput(bcclDataType_t dt, bcclRedOp_t op, int nranks, int rank, size_t first,
                     size_t count, void* dst);
// Encoded ReduceExpected for elements 0..count-1.
std::vector<unsigned char> ExpectedReduction(bcclDataType_t dt, bcclRedOp_t op, int nranks,
                                             size_t count);
void FillPattern(bcclDataType_t dt, int64_t id, size_t count, void* dst);

// Compares `count` elements; on mismatch returns a description of the first few differences
// (element index and both values), otherwise "".
std::string CompareElements(bcclDataType_t dt, const void* got, const void* want, size_t count,
                            size_t reportBase = 0);

// Guard and filler bytes. 0x9C.. decodes to a value no generator produces in any dtype, so an
// element the library forgot to write never passes for a correct one.
constexpr unsigned char kGuardByte = 0xA5;
constexpr unsigned char kGarbageByte = 0x9C;

// A buffer of `count` elements with guard elements on both sides. The payload starts at an
// odd element offset so it is not 16-byte aligned for wide types, which catches kernels that
// assume more alignment than the element size.
class GuardedBuffer {
 public:
  GuardedBuffer(bcclDataType_t dt, size_t count);
  void* data() { return bytes_.data() + kGuardElems * elem_; }
  const void* data() const { return bytes_.data() + kGuardElems * elem_; }
  unsigned char* at(size_t elem) { return static_cast<unsigned char*>(data()) + elem * elem_; }
  size_t count() const { return count_; }
  size_t bytes() const { return count_ * elem_; }
  void FillGarbage();
  // "" when both guards are intact, else which side was overwritten.
  std::string CheckGuards() const;

 private:
  static constexpr size_t kGuardElems = 3;
  size_t elem_;
  size_t count_;
  std::vector<unsigned char> bytes_;
};

}  // namespace bccltest

#endif  // BCCL_TESTS_SUPPORT_DATA_H_
