// Tables behind dtype.h. Kept out of line so the name tables exist once in the library.
#include "core/dtype.h"

#include <strings.h>

namespace bccl {
namespace {

constexpr size_t kSizes[bcclNumTypes] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2};
constexpr const char* kDtypeNames[bcclNumTypes] = {
    "int8", "uint8", "int32", "uint32", "int64", "uint64", "half", "float", "double", "bfloat16"};
constexpr const char* kRedOpNames[bcclNumOps] = {"sum", "prod", "max", "min", "avg"};

struct Alias {
  const char* name;
  bcclDataType_t dtype;
};
constexpr Alias kDtypeAliases[] = {
    {"char", bcclChar},       {"int", bcclInt},         {"float16", bcclFloat16},
    {"fp16", bcclFloat16},    {"float32", bcclFloat32}, {"fp32", bcclFloat32},
    {"float64", bcclFloat64}, {"fp64", bcclFloat64},    {"bf16", bcclBfloat16},
    {"bfloat", bcclBfloat16}, {"i8", bcclInt8},         {"u8", bcclUint8},
    {"i32", bcclInt32},       {"u32", bcclUint32},      {"i64", bcclInt64},
    {"u64", bcclUint64},      {"f16", bcclFloat16},     {"f32", bcclFloat32},
    {"f64", bcclFloat64},
};

}  // namespace

bool isValidDtype(int dtype) { return dtype >= 0 && dtype < bcclNumTypes; }
bool isValidRedOp(int op) { return op >= 0 && op < bcclNumOps; }

size_t dtypeSize(bcclDataType_t dtype) { return isValidDtype(dtype) ? kSizes[dtype] : 0; }

const char* dtypeName(bcclDataType_t dtype) {
  return isValidDtype(dtype) ? kDtypeNames[dtype] : "unknown";
}

bool dtypeFromName(const char* name, bcclDataType_t* dtype) {
  if (name == nullptr || dtype == nullptr) return false;
  for (int i = 0; i < bcclNumTypes; ++i) {
    if (strcasecmp(name, kDtypeNames[i]) == 0) {
      *dtype = static_cast<bcclDataType_t>(i);
      return true;
    }
  }
  for (const Alias& a : kDtypeAliases) {
    if (strcasecmp(name, a.name) == 0) {
      *dtype = a.dtype;
      return true;
    }
  }
  return false;
}

const char* redOpName(bcclRedOp_t op) { return isValidRedOp(op) ? kRedOpNames[op] : "unknown"; }

bool redOpFromName(const char* name, bcclRedOp_t* op) {
  if (name == nullptr || op == nullptr) return false;
  for (int i = 0; i < bcclNumOps; ++i) {
    if (strcasecmp(name, kRedOpNames[i]) == 0) {
      *op = static_cast<bcclRedOp_t>(i);
      return true;
    }
  }
  if (strcasecmp(name, "product") == 0) {
    *op = bcclProd;
    return true;
  }
  return false;
}

}  // namespace bccl
