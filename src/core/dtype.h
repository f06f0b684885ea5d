// Size and naming of bccl's data types and reduction ops, in one place so that the API's
// argument checks, the perf tools' command lines and the logs all agree (names follow
// nccl-tests so results can be compared side by side).
#ifndef BCCL_CORE_DTYPE_H_
#define BCCL_CORE_DTYPE_H_

#include <cstddef>

#include "bccl/bccl.h"

namespace bccl {

bool isValidDtype(int dtype);
bool isValidRedOp(int op);

// Bytes per element; 0 for a value outside the enum.
size_t dtypeSize(bcclDataType_t dtype);

// nccl-tests names ("int8", ..., "half", "float", "double", "bfloat16"); "unknown" if invalid.
const char* dtypeName(bcclDataType_t dtype);
// Accepts dtypeName's names and common aliases ("fp16", "bf16", "fp32", "float64", "int",
// "char", ...), case-insensitively. Leaves *dtype alone and returns false if unknown.
bool dtypeFromName(const char* name, bcclDataType_t* dtype);

// "sum", "prod", "max", "min", "avg"; "unknown" if invalid.
const char* redOpName(bcclRedOp_t op);
bool redOpFromName(const char* name, bcclRedOp_t* op);

}  // namespace bccl

#endif  // BCCL_CORE_DTYPE_H_
