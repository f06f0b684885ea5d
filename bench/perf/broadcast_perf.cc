// broadcast_perf: bandwidth and correctness of bcclBroadcast, in nccl-tests' format so the
// numbers line up with broadcast_perf runs on NCCL. The harness is in perf_common.h.
#include "perf_common.h"

namespace {

class Broadcast : public bcclperf::Collective {
 public:
  const char* Name() const override { return "Broadcast"; }
  bool UsesRoot() const override { return true; }
  bcclResult_t Run(const bcclperf::Call& c) const override {
    return bcclBroadcast(c.send, c.recv, c.count, c.dtype, c.root, c.comm, c.stream);
  }
  bool Expected(const bcclperf::Inputs& in, size_t, size_t j, int64_t* v) const override {
    *v = in.At(in.root(), j);
    return true;
  }
};

}  // namespace

int main(int argc, char** argv) { return bcclperf::PerfMain(argc, argv, Broadcast()); }
