// reduce_perf: bandwidth and correctness of bcclReduce, in nccl-tests' format so the numbers
// line up with reduce_perf runs on NCCL. The harness is in perf_common.h.
#include "perf_common.h"

namespace {

class Reduce : public bcclperf::Collective {
 public:
  const char* Name() const override { return "Reduce"; }
  bool UsesOp() const override { return true; }
  bool UsesRoot() const override { return true; }
  bcclResult_t Run(const bcclperf::Call& c) const override {
    return bcclReduce(c.send, c.recv, c.count, c.dtype, c.op, c.root, c.comm, c.stream);
  }
  // Only the root's receive buffer has a defined result.
  bool Expected(const bcclperf::Inputs& in, size_t, size_t j, int64_t* v) const override {
    if (in.rank() != in.root()) return false;
    *v = in.Reduced(j);
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) { return bcclperf::PerfMain(argc, argv, Reduce()); }
