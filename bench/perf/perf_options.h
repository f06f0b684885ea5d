// The perf tools' command line (nccl-tests' flags) and the sizes and counts it asks for.
#ifndef BCCL_BENCH_PERF_PERF_OPTIONS_H_
#define BCCL_BENCH_PERF_PERF_OPTIONS_H_

#include <cstddef>
#include <cstdio>
#include <vector>

#include "bccl/bccl.h"

namespace bcclperf {

struct Options {
  size_t min_bytes = size_t{32} << 20;
  size_t max_bytes = size_t{32} << 20;
  size_t step_bytes = size_t{1} << 20;
  size_t step_factor = 1;
  int iters = 20;
  int warmup = 5;
  bool check = true;
  std::vector<bcclDataType_t> dtypes{bcclFloat};
  std::vector<bcclRedOp_t> ops{bcclSum};
  int root = 0;
  bool blocking = false;
  // Time every call on its own and print each row's spread (needs blocking calls).
  bool per_call = false;
  // Time only the out-of-place loop.
  bool out_of_place_only = false;
};

// Whether this process should print usage and flag errors (before the rank is known).
bool LooksLikeRankZero();
void Usage(FILE* out, const char* prog);
// Fills `o`; returns -1 to go on, else the exit code (after printing help or an error).
int ParseArgs(int argc, char** argv, Options* o);
// The message sizes in bytes, and each size's element count for elements of unit_bytes.
std::vector<size_t> Sizes(const Options& o);
std::vector<size_t> Counts(const std::vector<size_t>& sizes, size_t unit_bytes);

}  // namespace bcclperf

#endif  // BCCL_BENCH_PERF_PERF_OPTIONS_H_
