// Repeated float32 sum allreduce with every iteration's result checked, one line per iteration
// (when it started, how long it took, its bus bandwidth, wrong elements), so that a run during
// which a path is cut, slowed or restored shows what each phase delivered and that no result
// was wrong. Launched like the perf tools (RANK, WORLD_SIZE, BCCL_COMM_ID); public API only.
//
//   mp_allreduce [-b BYTES] [-n ITERS] [-t SECONDS] [-w WARMUP]
// Runs ITERS iterations, or as many as fit in SECONDS (all ranks agree when to stop). Exits 1 on
// any wrong element or failed call.
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bccl/bccl.h"

namespace {

#define CHECK_BCCL(call)                                                                        \
  do {                                                                                          \
    bcclResult_t r_ = (call);                                                                   \
    if (r_ != bcclSuccess) {                                                                    \
      std::fprintf(stderr, "mp_allreduce: %s failed: %s (%s)\n", #call, bcclGetErrorString(r_), \
                   bcclGetLastError(nullptr));                                                  \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Small integers, so every sum is exact in float32 whatever the order of reduction.
float valueAt(int rank, size_t i, int iter) {
  return static_cast<float>((rank + 1) * static_cast<int>((i + static_cast<size_t>(iter)) % 1000));
}

}  // namespace

int main(int argc, char** argv) {
  size_t bytes = 64u << 20;
  long iters = 0;
  double seconds = 0;
  int warmup = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "-b") {
      bytes = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (flag == "-n") {
      iters = std::strtol(argv[i + 1], nullptr, 10);
    } else if (flag == "-t") {
      seconds = std::strtod(argv[i + 1], nullptr);
    } else if (flag == "-w") {
      warmup = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: %s [-b BYTES] [-n ITERS] [-t SECONDS] [-w WARMUP]\n", argv[0]);
      return 2;
    }
  }
  if (iters <= 0 && seconds <= 0) iters = 10;
  bcclComm_t comm = nullptr;
  CHECK_BCCL(bcclCommInitFromEnv(&comm, nullptr));
  int rank = 0, nranks = 1;
  CHECK_BCCL(bcclCommUserRank(comm, &rank));
  CHECK_BCCL(bcclCommCount(comm, &nranks));
  const size_t count = bytes / sizeof(float);
  std::vector<float> send(count), recv(count);
  const double busFactor = nranks > 1 ? 2.0 * (nranks - 1) / nranks : 1.0;
  const float sumOfRanks = static_cast<float>(nranks * (nranks + 1) / 2);

  for (int i = 0; i < warmup; ++i)
    CHECK_BCCL(bcclAllReduce(send.data(), recv.data(), count, bcclFloat32, bcclSum, comm, nullptr));
  const auto start = std::chrono::steady_clock::now();
  const double epoch =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  int64_t totalWrong = 0;
  double totalTime = 0;
  long done = 0;
  if (rank == 0)
    std::printf("# mp_allreduce: %d ranks, %zu bytes per call, busbw in GB/s, start_epoch %.3f\n",
                nranks, bytes, epoch);
  for (int iter = 0;; ++iter) {
    // Rank 0 decides when time is up; everyone learns it through the same allreduce.
    int32_t goOn = iters > 0 ? (iter < iters) : (secondsSince(start) < seconds);
    CHECK_BCCL(bcclAllReduce(&goOn, &goOn, 1, bcclInt32, bcclMin, comm, nullptr));
    if (!goOn) break;
    for (size_t i = 0; i < count; ++i) send[i] = valueAt(rank, i, iter);
    const double t0 = secondsSince(start);
    CHECK_BCCL(bcclAllReduce(send.data(), recv.data(), count, bcclFloat32, bcclSum, comm, nullptr));
    const double dt = secondsSince(start) - t0;
    int64_t wrong = 0;
    for (size_t i = 0; i < count; ++i)
      wrong += recv[i] != sumOfRanks * static_cast<float>((i + static_cast<size_t>(iter)) % 1000);
    totalWrong += wrong;
    totalTime += dt;
    ++done;
    if (rank == 0) {
      std::printf("iter %d start %.3f time_ms %.2f busbw %.4f wrong %" PRId64 "\n", iter, t0,
                  dt * 1e3, static_cast<double>(bytes) * busFactor / dt / 1e9, wrong);
      std::fflush(stdout);
    }
  }
  // Every rank's verdict counts, not only rank 0's.
  int64_t allWrong = totalWrong;
  CHECK_BCCL(bcclAllReduce(&allWrong, &allWrong, 1, bcclInt64, bcclSum, comm, nullptr));
  if (rank == 0)
    std::printf("summary iters %ld wrong %" PRId64 " avg_busbw %.4f\n", done, allWrong,
                done > 0 ? static_cast<double>(bytes) * busFactor * done / totalTime / 1e9 : 0.0);
  CHECK_BCCL(bcclCommDestroy(comm));
  return allWrong == 0 ? 0 : 1;
}
