// Element-wise reduction kernels used by every reducing collective. They are the only place
// bccl touches element values, so dtype semantics (wraparound, rounding, NaN) live here.
#ifndef BCCL_CORE_REDUCE_H_
#define BCCL_CORE_REDUCE_H_

#include <cstddef>

#include "bccl/bccl.h"

namespace bccl {

// dst[i] = a[i] op b[i] for i < count. dst may be a or b exactly (in place) but must not
// partially overlap either. bcclAvg reduces as a sum: the caller divides once at the end with
// scaleDivide. Integer sum/prod wrap around; fp16/bf16 are combined in float and rounded
// once to nearest even. Float min/max propagate NaN. Invalid dtype/op: does nothing (the API
// layer validates arguments before getting here).
void reduceInto(void* dst, const void* a, const void* b, size_t count, bcclDataType_t dt,
                bcclRedOp_t op);

// dst[i] = src[i] / divisor, the final step of bcclAvg. Integers use C division (truncation
// toward zero, as NCCL does); fp16/bf16 divide in float and round once. dst may equal src.
// divisor must be >= 1 (it is the rank count); anything less copies src unchanged.
void scaleDivide(void* dst, const void* src, size_t count, bcclDataType_t dt, int divisor);

// Which kernel set is in use: "avx2" (AVX2 + F16C) or "portable". Chosen from the CPU on
// first use.
const char* reduceIsa();
// Overrides the choice, process-wide ("avx2", "portable" or "auto"), so tests and benchmarks
// can cover the fallback on AVX2 machines. Returns false, changing nothing, if the name is
// unknown or the CPU lacks the ISA. Calls already running finish on the set they started with.
bool setReduceIsa(const char* name);

}  // namespace bccl

#endif  // BCCL_CORE_REDUCE_H_
