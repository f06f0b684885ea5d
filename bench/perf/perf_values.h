// The values behind the perf tools' checks: the dtypes they know (names, sizes, the range in
// which every integer is exact) and how logical integer values are stored in and read from each
// dtype. Inputs (perf_common.h) builds on these.
#ifndef BCCL_BENCH_PERF_PERF_VALUES_H_
#define BCCL_BENCH_PERF_PERF_VALUES_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "bccl/bccl.h"

namespace bcclperf {

struct TypeInfo {
  bcclDataType_t type;
  const char* name;
  size_t size;
  bool is_float;
  bool is_signed;
  // The largest magnitude at which every integer is exact in the type. 64-bit integers get 2^62
  // rather than 2^53 so a library that reduces them through double is caught.
  int64_t limit;
};

// Indexed by bcclDataType_t, which is also nccl-tests' "-d all" order.
extern const TypeInfo kTypes[bcclNumTypes];
extern const char* const kOpNames[bcclNumOps];
const TypeInfo& Info(bcclDataType_t t);

// Element i of a buffer of dtype t, as logical integers (stores are exact within t's limit).
void Store(bcclDataType_t t, void* base, size_t i, int64_t v);
double LoadDouble(bcclDataType_t t, const void* base, size_t i);
std::string FormatElem(bcclDataType_t t, const void* base, size_t i);
bool SameElem(bcclDataType_t t, const void* a, const void* b, size_t i);

}  // namespace bcclperf

#endif  // BCCL_BENCH_PERF_PERF_VALUES_H_
