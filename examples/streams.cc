// Shows the non-blocking path: collectives enqueued on a bccl stream run on a background
// thread while the caller keeps computing, the way a training loop overlaps gradient exchange
// with the rest of the backward pass. Also shows small RAII owners for the C handles.
//
//   bcclrun -n 4 ./example_streams

#include <bccl/bccl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void check(bcclResult_t res, const char* what, bcclComm_t comm = nullptr) {
  if (res == bcclSuccess) return;
  throw std::runtime_error(std::string(what) + ": " + bcclGetErrorString(res) + ": " +
                           bcclGetLastError(comm));
}

// Owns a communicator. destroy() is the success path and waits for the peers; a Comm that
// reaches its destructor still open is being unwound after a failure, when the peers may be
// gone, so it aborts instead, which never blocks.
class Comm {
 public:
  Comm() {
    bcclConfig_t config = BCCL_CONFIG_INITIALIZER;
    check(bcclCommInitFromEnv(&comm_, &config), "bcclCommInitFromEnv");
    check(bcclCommUserRank(comm_, &rank_), "bcclCommUserRank", comm_);
    check(bcclCommCount(comm_, &size_), "bcclCommCount", comm_);
  }
  ~Comm() {
    if (comm_ != nullptr) bcclCommAbort(comm_);
  }
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  void destroy() {
    bcclComm_t comm = comm_;
    comm_ = nullptr;
    check(bcclCommDestroy(comm), "bcclCommDestroy");
  }
  bcclComm_t get() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }

 private:
  bcclComm_t comm_ = nullptr;
  int rank_ = 0;
  int size_ = 0;
};

class Stream {
 public:
  Stream() { check(bcclStreamCreate(&stream_), "bcclStreamCreate"); }
  ~Stream() { bcclStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  bcclStream_t get() const { return stream_; }
  void synchronize() { check(bcclStreamSynchronize(stream_), "bcclStreamSynchronize"); }
  // A query that is neither "idle" nor "busy" reports a failed operation.
  bool busy() {
    bcclResult_t res = bcclStreamQuery(stream_);
    if (res == bcclInProgress) return true;
    check(res, "bcclStreamQuery");
    return false;
  }

 private:
  bcclStream_t stream_ = nullptr;
};

// Stands in for the computation a real program overlaps with communication.
double otherWork(size_t chunk) {
  double acc = 0;
  for (size_t i = 1; i <= chunk; ++i) acc += std::sqrt(static_cast<double>(i));
  return acc;
}

void expectAll(const std::vector<float>& v, float want, const char* what) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != want) {
      throw std::runtime_error(std::string(what) + ": element " + std::to_string(i) + " is " +
                               std::to_string(v[i]) + ", expected " + std::to_string(want));
    }
  }
}

int run() {
  constexpr size_t kGatherCount = 1024;
  const size_t bucketSizes[] = {size_t{1} << 20, size_t{1} << 18, size_t{1} << 16};

  // The stream reads and writes these until it is synchronized, so they are declared before
  // the stream and the communicator and outlive both, even when unwinding.
  std::vector<std::vector<float>> sends, recvs;
  std::vector<int32_t> gatherSend(kGatherCount), gatherRecv;
  int32_t step = 0, maxStep = -1;

  Stream stream;
  Comm comm;
  const int rank = comm.rank(), n = comm.size();
  for (size_t b = 0; b < std::size(bucketSizes); ++b) {
    sends.emplace_back(bucketSizes[b], static_cast<float>((rank + 1) * (b + 1)));
    recvs.emplace_back(bucketSizes[b]);
  }
  for (size_t i = 0; i < kGatherCount; ++i) gatherSend[i] = rank * 100000 + static_cast<int>(i);
  gatherRecv.resize(kGatherCount * static_cast<size_t>(n));
  step = 10 * rank;

  // Every call returns as soon as the operation is queued; they run in this order.
  for (size_t b = 0; b < sends.size(); ++b) {
    check(bcclAllReduce(sends[b].data(), recvs[b].data(), sends[b].size(), bcclFloat, bcclSum,
                        comm.get(), stream.get()),
          "bcclAllReduce", comm.get());
  }
  check(bcclAllReduce(&step, &maxStep, 1, bcclInt32, bcclMax, comm.get(), stream.get()),
        "bcclAllReduce(max)", comm.get());
  check(bcclAllGather(gatherSend.data(), gatherRecv.data(), kGatherCount, bcclInt32, comm.get(),
                      stream.get()),
        "bcclAllGather", comm.get());
  const bool busyAfterEnqueue = stream.busy();

  auto start = std::chrono::steady_clock::now();
  double work = 0;
  int checks = 0, busyChecks = 0;
  for (; checks < 50; ++checks) {
    work += otherWork(20000);
    busyChecks += stream.busy() ? 1 : 0;
  }
  double workMs =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  stream.synchronize();
  const bool busyAfterSync = stream.busy();

  const float ranksSum = static_cast<float>(n * (n + 1) / 2);
  for (size_t b = 0; b < recvs.size(); ++b) {
    expectAll(recvs[b], ranksSum * static_cast<float>(b + 1), "allreduce bucket");
  }
  if (maxStep != 10 * (n - 1)) throw std::runtime_error("max allreduce gave the wrong step");
  for (size_t i = 0; i < gatherRecv.size(); ++i) {
    int32_t want = static_cast<int32_t>(i / kGatherCount * 100000 + i % kGatherCount);
    if (gatherRecv[i] != want) throw std::runtime_error("allgather element " + std::to_string(i));
  }
  comm.destroy();

  std::printf(
      "rank %d/%d: %zu sum allreduces, 1 max allreduce and 1 allgather correct; "
      "query: %s after enqueue, busy on %d of %d checks during %.1f ms of other work "
      "(result %.3g), %s after synchronize\n",
      rank, n, sends.size(), busyAfterEnqueue ? "in progress" : "idle", busyChecks, checks, workMs,
      work, busyAfterSync ? "in progress" : "idle");
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example_streams: %s\n", e.what());
    return 1;
  }
}
