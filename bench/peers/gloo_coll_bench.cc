// gloo_coll_bench: one Gloo collective at one size over Gloo's TCP transport on loopback,
// measured and checked like mpi_coll_bench.c. The script starts one process per rank; they meet
// through a FileStore in a directory of their own.
//
//   gloo_coll_bench RANK NRANKS STORE_DIR allreduce|allgather|reducescatter BYTES WARMUP ITERS
//                   [MAX_S]
//
// ITERS is an upper bound: with MAX_S, the timed loop is cut to fit MAX_S seconds (peer_iters).
// Rank 0 prints one RESULT line (see peer_common.h).
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/reduce_scatter.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

#include "peer_common.h"

namespace {

using Ctx = std::shared_ptr<gloo::Context>;
using ReduceFn = std::function<void(void*, const void*, const void*, size_t)>;

// One collective bound to its buffers once, so the timed loop only runs it. The options and
// algorithm objects live in the closures.
std::function<void()> MakeAllreduce(const Ctx& ctx, float* send, float* recv, size_t count) {
  auto opts = std::make_shared<gloo::AllreduceOptions>(ctx);
  opts->setInput(send, count);
  opts->setOutput(recv, count);
  opts->setReduceFunction(
      ReduceFn(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>)));
  opts->setTag(1);
  return [opts] { gloo::allreduce(*opts); };
}

std::function<void()> MakeAllgather(const Ctx& ctx, float* send, float* recv, size_t count,
                                    int nranks) {
  auto opts = std::make_shared<gloo::AllgatherOptions>(ctx);
  opts->setInput(send, count);
  opts->setOutput(recv, count * static_cast<size_t>(nranks));
  opts->setTag(2);
  return [opts] { gloo::allgather(*opts); };
}

// Gloo's only reduce-scatter is the halving-doubling algorithm, in place: the input buffer is
// reduced and this rank's block ends up at its start.
std::function<void()> MakeReduceScatter(const Ctx& ctx, float* buf, size_t count, int nranks) {
  auto rs = std::make_shared<gloo::ReduceScatterHalvingDoubling<float>>(
      ctx, std::vector<float*>{buf}, static_cast<int>(count * static_cast<size_t>(nranks)),
      std::vector<int>(static_cast<size_t>(nranks), static_cast<int>(count)));
  return [rs] { rs->run(); };
}

void Barrier(const Ctx& ctx) {
  gloo::BarrierOptions opts(ctx);
  opts.setTag(3);
  gloo::barrier(opts);
}

// Reduces one double over the ranks with fn (max of times, sum of wrong counts).
double ReduceDouble(const Ctx& ctx, double v, const ReduceFn& fn) {
  double out = 0;
  gloo::AllreduceOptions opts(ctx);
  opts.setInput(&v, 1);
  opts.setOutput(&out, 1);
  opts.setReduceFunction(fn);
  opts.setTag(4);
  gloo::allreduce(opts);
  return out;
}

void MaxFn(void* c, const void* a, const void* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    static_cast<double*>(c)[i] =
        std::max(static_cast<const double*>(a)[i], static_cast<const double*>(b)[i]);
}

void SumFn(void* c, const void* a, const void* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    static_cast<double*>(c)[i] =
        static_cast<const double*>(a)[i] + static_cast<const double*>(b)[i];
}

}  // namespace

int main(int argc, char** argv) {
  const peer_coll c = argc == 8 || argc == 9 ? peer_parse_coll(argv[4]) : PEER_BAD;
  if (c == PEER_BAD) {
    std::fprintf(stderr,
                 "usage: %s RANK NRANKS STORE_DIR allreduce|allgather|reducescatter BYTES WARMUP "
                 "ITERS [MAX_S]\n",
                 argv[0]);
    return 2;
  }
  const int rank = std::atoi(argv[1]), nranks = std::atoi(argv[2]);
  const size_t req = std::strtoull(argv[5], nullptr, 10);
  const int warmup = std::atoi(argv[6]);
  const int max_iters = std::max(1, std::atoi(argv[7]));
  const double max_s = argc == 9 ? std::atof(argv[8]) : 0.0;

  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";  // loopback only
  auto dev = gloo::transport::tcp::CreateDevice(attr);
  gloo::rendezvous::FileStore store(argv[3]);
  auto rctx = std::make_shared<gloo::rendezvous::Context>(rank, nranks);
  rctx->setTimeout(std::chrono::seconds(600));  // the script's timeout bounds the run instead
  rctx->connectFullMesh(store, dev);
  const Ctx ctx = rctx;

  const size_t count = peer_count(c, req, nranks);
  const size_t ns = peer_send_elems(c, count, nranks), nr = peer_recv_elems(c, count, nranks);
  std::vector<float> send(ns), recv(nr, PEER_POISON);
  peer_fill(send.data(), ns, rank);

  float* out = recv.data();
  std::function<void()> op;
  if (c == PEER_ALLREDUCE) {
    op = MakeAllreduce(ctx, send.data(), recv.data(), count);
  } else if (c == PEER_ALLGATHER) {
    op = MakeAllgather(ctx, send.data(), recv.data(), count, nranks);
  } else {
    op = MakeReduceScatter(ctx, send.data(), count, nranks);
    out = send.data();
  }

  for (int i = 0; i < warmup - 1; ++i) op();
  // The last warm-up (or a probe without warm-ups) sizes the timed loop; every rank must agree.
  const auto p0 = std::chrono::steady_clock::now();
  op();
  const double probe = std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count();
  const int iters = peer_iters(max_iters, max_s, ReduceDouble(ctx, probe, MaxFn));
  Barrier(ctx);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) op();
  const auto t1 = std::chrono::steady_clock::now();
  const double time_us = std::chrono::duration<double, std::micro>(t1 - t0).count() / iters;

  // A fresh call on fresh inputs; in-place reduce-scatter cannot poison its output, the others do.
  // Barriers on both sides of the refill: no rank may still be reading a buffer being refilled,
  // nor start the call before every input is fresh.
  Barrier(ctx);
  peer_fill(send.data(), ns, rank);
  std::fill(recv.begin(), recv.end(), PEER_POISON);
  Barrier(ctx);
  op();
  const double wrong = static_cast<double>(peer_check(c, rank, nranks, count, out));

  const double max_us = ReduceDouble(ctx, time_us, MaxFn);
  const double all_wrong = ReduceDouble(ctx, wrong, SumFn);
  if (rank == 0)
    peer_print_result("gloo-tcp", c, nranks, req, count, iters, max_us,
                      static_cast<long long>(all_wrong));
  return 0;
}
