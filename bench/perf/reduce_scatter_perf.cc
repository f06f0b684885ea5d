// reduce_scatter_perf: bandwidth and correctness of bcclReduceScatter, in nccl-tests' format so
// the numbers line up with reduce_scatter_perf runs on NCCL. The harness is in perf_common.h.
#include "perf_common.h"

namespace {

class ReduceScatter : public bcclperf::Collective {
 public:
  const char* Name() const override { return "ReduceScatter"; }
  bool UsesOp() const override { return true; }
  // nccl-tests' size for reduce-scatter is the total sent, nranks * recvcount elements.
  size_t SizeElemsPerCount(int n) const override { return static_cast<size_t>(n); }
  bcclperf::Layout GetLayout(size_t count, int rank, int n) const override {
    bcclperf::Layout l;
    l.send_elems = count * static_cast<size_t>(n);
    l.recv_elems = count;
    l.in_place_recv_offset = count * static_cast<size_t>(rank);  // own slot of the input
    return l;
  }
  // Each rank sends the (n-1)/n of its input that other ranks own.
  double BusFactor(int n) const override { return static_cast<double>(n - 1) / n; }
  bcclResult_t Run(const bcclperf::Call& c) const override {
    return bcclReduceScatter(c.send, c.recv, c.count, c.dtype, c.op, c.comm, c.stream);
  }
  bool Expected(const bcclperf::Inputs& in, size_t count, size_t j, int64_t* v) const override {
    *v = in.Reduced(static_cast<size_t>(in.rank()) * count + j);
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) { return bcclperf::PerfMain(argc, argv, ReduceScatter()); }
