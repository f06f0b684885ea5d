// The harness shared by the nccl-tests-style perf tools (all_reduce_perf and friends). The tools
// differ only in which collective they call and how its buffers and results are shaped; keeping
// flags, timing, result checking and the table here makes their numbers directly comparable with
// each other and with nccl-tests output.
#ifndef BCCL_BENCH_PERF_PERF_COMMON_H_
#define BCCL_BENCH_PERF_PERF_COMMON_H_

#include <cstddef>
#include <cstdint>

#include "bccl/bccl.h"

namespace bcclperf {

// fp16 / bf16 <-> float, round-to-nearest-even. The tools may only use the public header, so
// they cannot borrow the library's converters (and should not: the checker must be independent).
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBfloat16(float f);
float Bfloat16ToFloat(uint16_t b);

// The values every rank feeds a collective, as small integers ("logical" values) that the
// harness stores in the dtype under test. They are chosen per dtype and op so that every
// reduction over the communicator, in any order, is exact: the checker can then demand
// bit-exact results instead of a tolerance.
class Inputs {
 public:
  Inputs(bcclDataType_t dtype, bool reduces, bcclRedOp_t op, int rank, int nranks, int root);

  // What `rank` puts at element `index` of its send buffer.
  int64_t At(int rank, size_t index) const;
  // The reduction of At(r, index) over every rank r with the op under test.
  int64_t Reduced(size_t index) const;

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  int root() const { return root_; }

 private:
  enum class Scheme { kSpread, kSum, kProd, kAvg };
  Scheme scheme_;
  bcclRedOp_t op_;
  bool is_signed_;
  int rank_, nranks_, root_;
  int64_t limit_;     // every value and every partial result stays within [-limit_, limit_]
  int64_t per_rank_;  // bound for one rank's value when nranks of them are summed
  int max_twos_;      // how many factors of 2 a product may collect
};

// How a collective's buffers look for one call of `count` (the count argument of the call).
struct Layout {
  size_t send_elems = 0;
  size_t recv_elems = 0;
  // In-place runs use one buffer of max(send_elems, recv_elems) elements; these offsets place
  // the send and receive views inside it the way NCCL defines in-place for the collective.
  size_t in_place_send_offset = 0;
  size_t in_place_recv_offset = 0;
};

// Everything one call of the collective needs.
struct Call {
  const void* send;
  void* recv;
  size_t count;
  bcclDataType_t dtype;
  bcclRedOp_t op;
  int root;
  int rank;
  int nranks;
  bcclComm_t comm;
  bcclStream_t stream;
};

// A tool describes its collective by overriding this; PerfMain does the rest.
class Collective {
 public:
  virtual ~Collective() = default;
  // Printed in the header, e.g. "AllReduce".
  virtual const char* Name() const = 0;
  virtual bool UsesOp() const { return false; }
  virtual bool UsesRoot() const { return false; }
  // False when the collective has no meaningful in-place form; the in-place columns then read
  // N/A and are left out of the average bus bandwidth.
  virtual bool HasInPlace() const { return true; }
  // The "size" column is count * typesize * SizeElemsPerCount(nranks), following nccl-tests'
  // per-collective definition of size (e.g. the total gathered bytes for AllGather).
  virtual size_t SizeElemsPerCount(int nranks) const {
    (void)nranks;
    return 1;
  }
  virtual Layout GetLayout(size_t count, int rank, int nranks) const;
  // busbw = algbw * BusFactor: the fraction of the data that must cross the slowest link, so
  // that busbw is comparable across collectives and rank counts (nccl-tests' PERFORMANCE.md).
  virtual double BusFactor(int nranks) const {
    (void)nranks;
    return 1.0;
  }
  virtual bcclResult_t Run(const Call& call) const = 0;
  // The logical value element `j` of this rank's receive buffer must hold after a call of
  // `count`; false when the element carries no defined result (e.g. Reduce on a non-root).
  virtual bool Expected(const Inputs& in, size_t count, size_t j, int64_t* value) const = 0;
};

// Parses the nccl-tests flags, creates the communicator from the environment, runs the table
// and returns the process exit code.
int PerfMain(int argc, char** argv, const Collective& coll);

}  // namespace bcclperf

#endif  // BCCL_BENCH_PERF_PERF_COMMON_H_
