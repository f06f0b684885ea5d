// all_gather_perf: bandwidth and correctness of bcclAllGather, in nccl-tests' format so the
// numbers line up with all_gather_perf runs on NCCL. The harness is in perf_common.h.
#include "perf_common.h"

namespace {

class AllGather : public bcclperf::Collective {
 public:
  const char* Name() const override { return "AllGather"; }
  // nccl-tests' size for all-gather is the gathered total, nranks * sendcount elements.
  size_t SizeElemsPerCount(int n) const override { return static_cast<size_t>(n); }
  bcclperf::Layout GetLayout(size_t count, int rank, int n) const override {
    bcclperf::Layout l;
    l.send_elems = count;
    l.recv_elems = count * static_cast<size_t>(n);
    l.in_place_send_offset = count * static_cast<size_t>(rank);  // own slot of the output
    return l;
  }
  // Each rank receives the (n-1)/n of the total that it did not contribute.
  double BusFactor(int n) const override { return static_cast<double>(n - 1) / n; }
  bcclResult_t Run(const bcclperf::Call& c) const override {
    return bcclAllGather(c.send, c.recv, c.count, c.dtype, c.comm, c.stream);
  }
  bool Expected(const bcclperf::Inputs& in, size_t count, size_t j, int64_t* v) const override {
    *v = in.At(static_cast<int>(j / count), j % count);
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) { return bcclperf::PerfMain(argc, argv, AllGather()); }
