// sendrecv_perf: bandwidth and correctness of grouped bcclSend/bcclRecv around a ring (rank r
// sends to r+1 and receives from r-1), in nccl-tests' format. The harness is in perf_common.h.
#include "perf_common.h"

namespace {

class SendRecv : public bcclperf::Collective {
 public:
  const char* Name() const override { return "SendRecv"; }
  // Receiving into the buffer being sent races with the send, so the op has no in-place form;
  // the in-place columns read N/A rather than time something that cannot be checked.
  bool HasInPlace() const override { return false; }
  bcclResult_t Run(const bcclperf::Call& c) const override {
    const int next = (c.rank + 1) % c.nranks;
    const int prev = (c.rank - 1 + c.nranks) % c.nranks;
    bcclResult_t r = bcclGroupStart();
    if (r != bcclSuccess) return r;
    r = bcclSend(c.send, c.count, c.dtype, next, c.comm, c.stream);
    if (r == bcclSuccess) r = bcclRecv(c.recv, c.count, c.dtype, prev, c.comm, c.stream);
    const bcclResult_t end = bcclGroupEnd();  // always close the group, even after a failure
    return r != bcclSuccess ? r : end;
  }
  bool Expected(const bcclperf::Inputs& in, size_t, size_t j, int64_t* v) const override {
    *v = in.At((in.rank() - 1 + in.nranks()) % in.nranks(), j);
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) { return bcclperf::PerfMain(argc, argv, SendRecv()); }
