// alltoall_perf: bandwidth and correctness of bcclAllToAll, in nccl-tests' format so the
// numbers line up with alltoall_perf runs on NCCL. The harness is in perf_common.h.
#include "perf_common.h"

namespace {

class AllToAll : public bcclperf::Collective {
 public:
  const char* Name() const override { return "AllToAll"; }
  // NCCL defines no in-place all-to-all (every rank's output slot is still input another rank
  // has yet to read), so timing sendbuff == recvbuff would time undefined behaviour; the
  // in-place columns read N/A instead.
  bool HasInPlace() const override { return false; }
  // nccl-tests' size for all-to-all is one rank's whole buffer, nranks * count elements.
  size_t SizeElemsPerCount(int n) const override { return static_cast<size_t>(n); }
  bcclperf::Layout GetLayout(size_t count, int, int n) const override {
    bcclperf::Layout l;
    l.send_elems = count * static_cast<size_t>(n);
    l.recv_elems = l.send_elems;
    return l;
  }
  // Each rank keeps 1/n of its data and exchanges the rest.
  double BusFactor(int n) const override { return static_cast<double>(n - 1) / n; }
  bcclResult_t Run(const bcclperf::Call& c) const override {
    return bcclAllToAll(c.send, c.recv, c.count, c.dtype, c.comm, c.stream);
  }
  // Slot s of the output is what rank s addressed to this rank: its slot `rank`.
  bool Expected(const bcclperf::Inputs& in, size_t count, size_t j, int64_t* v) const override {
    const size_t from = j / count;
    *v = in.At(static_cast<int>(from), static_cast<size_t>(in.rank()) * count + j % count);
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) { return bcclperf::PerfMain(argc, argv, AllToAll()); }
