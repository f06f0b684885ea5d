// all_reduce_perf: bandwidth and correctness of bcclAllReduce, in nccl-tests' format so the
// numbers line up with all_reduce_perf runs on NCCL. The harness is in perf_common.h.
#include "perf_common.h"

namespace {

class AllReduce : public bcclperf::Collective {
 public:
  const char* Name() const override { return "AllReduce"; }
  bool UsesOp() const override { return true; }
  // A bandwidth-optimal all-reduce sends and receives 2(n-1)/n of the data on every rank.
  double BusFactor(int n) const override { return 2.0 * (n - 1) / n; }
  bcclResult_t Run(const bcclperf::Call& c) const override {
    return bcclAllReduce(c.send, c.recv, c.count, c.dtype, c.op, c.comm, c.stream);
  }
  bool Expected(const bcclperf::Inputs& in, size_t, size_t j, int64_t* v) const override {
    *v = in.Reduced(j);
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) { return bcclperf::PerfMain(argc, argv, AllReduce()); }
