#include "core/calibrate.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "algorithms/executor.h"
#include "core/comm.h"
#include "core/params.h"
#include "core/reduce.h"
#include "core/tuning.h"

namespace bccl {
namespace {

const IntParam kCalibrate("BCCL_CALIBRATE", 1,
                          "Measure link costs for algorithm selection when a communicator is "
                          "created (a few ms); 0 uses built-in defaults");

constexpr size_t kSmallBytes = 8;
constexpr size_t kLargeBytes = 1 << 20;
constexpr int kSmallReps = 9, kLargeReps = 3;
// Alpha is the slope of time over rounds (1 against kRounds back-to-back small exchanges), not
// the time of one exchange: that also holds what a whole operation costs once (taking its turn,
// setting up its plan), which every algorithm pays alike. Counted once per round, it made
// many-round algorithms look slower than they are and chose recursive doubling over
// Rabenseifner at 256 KiB, where Rabenseifner was 1.25x faster (4 and 8 ranks, one host).
constexpr int kRounds = 5;

// Runs `schedule`; *seconds (if given) gets how long it ran, compiling it not counted (a
// repeated collective's compiled schedule comes from the cache).
Status runSchedule(Communicator* comm, Schedule schedule, std::vector<char*> buffers,
                   double* seconds = nullptr) {
  Plan plan;
  plan.ctx = comm;
  plan.compiled = compileSchedule(std::move(schedule));
  plan.buffers = std::move(buffers);
  const int64_t t0 = nowNs();
  plan.ticket = comm->takeTicket();
  std::vector<Plan*> plans{&plan};
  Status st = executePlans(plans);
  if (seconds != nullptr) *seconds = static_cast<double>(nowNs() - t0) * 1e-9;
  return st;
}

Status runBarrier(Communicator* comm, const SelectionContext& ctx) {
  OpArgs barrier;
  barrier.kind = CollKind::kBarrier;
  StatusOr<Schedule> s = buildCollectiveSchedule(barrier, comm->rank(), ctx);
  if (!s.isOk()) return s.status();
  return runSchedule(comm, std::move(s.value()), {nullptr});
}

// `rounds` simultaneous sends and receives of `bytes` with `peer`, each round starting when the
// previous one's message has arrived, in one schedule; returns seconds. Without a peer (a rank
// left over in together mode) the schedule is empty.
StatusOr<double> timeExchange(Communicator* comm, int peer, char* out, char* in, size_t bytes,
                              int rounds) {
  Schedule s;
  s.algorithm = "calibrate";
  s.rank = comm->rank();
  s.nranks = comm->nranks();
  s.numBuffers = 3;
  const BufRef src{1, 0}, dst{2, 0};
  std::vector<uint32_t> previous;
  for (int i = 0; i < rounds && peer >= 0; ++i) {
    s.add(sendStep(peer, src, bytes), previous);
    previous = {s.add(recvStep(peer, dst, bytes), previous)};
  }
  double seconds = 0;
  BCCL_RETURN_IF_ERROR(runSchedule(comm, std::move(s), {nullptr, out, in}, &seconds));
  return seconds;
}

// The same rounds, each a schedule of its own; returns seconds.
StatusOr<double> timeSeparateExchanges(Communicator* comm, int peer, char* out, char* in,
                                       size_t bytes, int rounds) {
  double total = 0;
  for (int i = 0; i < rounds; ++i) {
    StatusOr<double> t = timeExchange(comm, peer, out, in, bytes, 1);
    if (!t.isOk()) return t.status();
    total += t.value();
  }
  return total;
}

using ExchangeTimer = StatusOr<double> (*)(Communicator*, int, char*, char*, size_t, int);

// How the pairs are timed. Alone, each rank's clock runs over its own exchange. Together (ranks
// sharing CPUs), every rank starts at a barrier and the clock stops at the next one, so each
// figure is what a pair gets while every other pair moves too, as in a collective. Timed alone
// with 8 ranks on 2 CPUs, the 1 MiB rate came out anywhere in 0.54-44.9 GB/s: whether a pair
// ran inside one scheduler slice or was cut off in the middle decided it.
struct Timing {
  Communicator* comm;
  const SelectionContext* ctx;
  bool together;
};

StatusOr<double> medianExchange(const Timing& timing, int peer, std::vector<char>& out,
                                std::vector<char>& in, size_t bytes, int reps, int rounds = 1,
                                ExchangeTimer timer = timeExchange) {
  std::vector<double> times;
  for (int i = 0; i <= reps; ++i) {  // the first is a warm-up
    if (timing.together) BCCL_RETURN_IF_ERROR(runBarrier(timing.comm, *timing.ctx));
    const int64_t t0 = nowNs();
    StatusOr<double> t = timer(timing.comm, peer, out.data(), in.data(), bytes, rounds);
    if (!t.isOk()) return t.status();
    if (timing.together) BCCL_RETURN_IF_ERROR(runBarrier(timing.comm, *timing.ctx));
    const double seconds = timing.together ? static_cast<double>(nowNs() - t0) * 1e-9 : t.value();
    if (i > 0) times.push_back(seconds);
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

// Adds this rank's alpha and large-message transfer time with `peer` (if any) to sums[0..2],
// and what running one more schedule costs beyond its rounds to *overhead.
// Timed together, a rank without a partner still takes part in every barrier.
Status measureLink(const Timing& timing, int peer, double* sums, double* overhead = nullptr) {
  if (peer < 0 && !timing.together) return Status::ok();
  std::vector<char> out(kLargeBytes, 1), in(kLargeBytes);
  StatusOr<double> small = medianExchange(timing, peer, out, in, kSmallBytes, kSmallReps);
  if (!small.isOk()) return small.status();
  StatusOr<double> many = medianExchange(timing, peer, out, in, kSmallBytes, kSmallReps, kRounds);
  if (!many.isOk()) return many.status();
  StatusOr<double> large = medianExchange(timing, peer, out, in, kLargeBytes, kLargeReps);
  if (!large.isOk()) return large.status();
  StatusOr<double> apart = 0.0;
  if (overhead != nullptr)
    apart = medianExchange(timing, peer, out, in, kSmallBytes, kSmallReps, kRounds,
                           timeSeparateExchanges);
  if (!apart.isOk()) return apart.status();
  if (peer < 0) return Status::ok();
  // Noise can make the slope tiny or negative: a round costs at least a tenth of one exchange.
  const double perRound =
      std::max((many.value() - small.value()) / (kRounds - 1), 0.1 * small.value());
  // Transfer times, not bandwidths, are summed over ranks: one rank whose difference came out
  // near zero (oversubscribed, both medians are mostly context switches) would otherwise carry
  // the mean bandwidth to absurd heights.
  sums[0] += perRound;
  sums[1] += std::max(large.value() - small.value(), 1e-9);
  sums[2] += 1;
  if (overhead != nullptr) {
    // The same rounds as separate schedules pay the schedule's fixed cost each time; the first
    // round of either also waits for the peer to arrive, which the difference cancels.
    *overhead += std::max((apart.value() - many.value()) / (kRounds - 1), 0.0);
  }
  return Status::ok();
}

double measureReduceBytesPerSecond() {
  const size_t count = kLargeBytes / sizeof(float);
  std::vector<float> a(count, 1.0f), b(count, 2.0f);
  reduceInto(a.data(), a.data(), b.data(), count, bcclFloat32, bcclSum);  // warm
  const int64_t t0 = nowNs();
  reduceInto(a.data(), a.data(), b.data(), count, bcclFloat32, bcclSum);
  const double seconds = std::max(static_cast<double>(nowNs() - t0) * 1e-9, 1e-9);
  return 3.0 * static_cast<double>(kLargeBytes) / seconds;  // two reads and a write per element
}

// Partners: the neighbour in my host (pairs 0-1, 2-3, ... of its ranks in ring order, so that
// partners share a core as the algorithms' nearest partners do), and the rank with my index on
// the paired host (hosts 0-1, 2-3, ...).
void partners(const SelectionContext& ctx, int rank, int* intra, int* inter) {
  *intra = *inter = -1;
  auto inOrder = [&](const std::vector<int>& host) {
    if (ctx.ringOrder.empty()) return host;
    std::vector<int> ordered;
    for (int r : ctx.ringOrder)
      if (std::find(host.begin(), host.end(), r) != host.end()) ordered.push_back(r);
    return ordered.size() == host.size() ? ordered : host;
  };
  for (size_t h = 0; h < ctx.hosts.size(); ++h) {
    const std::vector<int> mine = inOrder(ctx.hosts[h]);
    auto it = std::find(mine.begin(), mine.end(), rank);
    if (it == mine.end()) continue;
    const size_t i = static_cast<size_t>(it - mine.begin());
    if ((i ^ 1) < mine.size()) *intra = mine[i ^ 1];
    const size_t other = h ^ 1;
    if (other >= ctx.hosts.size()) continue;
    const std::vector<int> theirs = inOrder(ctx.hosts[other]);
    if (i < theirs.size()) *inter = theirs[i];
  }
}

}  // namespace

bool calibrationWanted() { return kCalibrate.get() != 0 && !tuneFileGiven(); }

Status calibrateLinkCosts(Communicator* comm, SelectionContext* ctx) {
  if (comm->nranks() < 2) return Status::ok();
  int intra = -1, inter = -1;
  partners(*ctx, comm->rank(), &intra, &inter);
  // Sums over ranks: intra alpha, bandwidth, count; inter alpha, bandwidth, count; reduce;
  // the schedule's fixed cost (intra pairs only: it is what the boards save within a host).
  std::vector<double> sums(8, 0.0);
  // Only the links within a machine share its CPUs; the network's pairs are timed alone (the
  // model divides a host's network bandwidth among the pairs crossing at once itself).
  const bool together = ctx->ranksPerCpu > 1;
  const Timing intraTiming{comm, ctx, together}, interTiming{comm, ctx, false};
  BCCL_RETURN_IF_ERROR(
      measureLink(intraTiming, intra, &sums[0], &sums[7]).withContext("measuring links"));
  BCCL_RETURN_IF_ERROR(measureLink(interTiming, inter, &sums[3]).withContext("measuring links"));
  sums[6] = measureReduceBytesPerSecond();
  OpArgs sum;
  sum.kind = CollKind::kAllReduce;
  sum.sendbuf = sum.recvbuf = sums.data();
  sum.count = sums.size();
  sum.dtype = bcclFloat64;
  sum.op = bcclSum;
  StatusOr<Schedule> s = buildCollectiveSchedule(sum, comm->rank(), *ctx);
  if (!s.isOk()) return s.status();
  BCCL_RETURN_IF_ERROR(runSchedule(comm, std::move(s.value()),
                                   {nullptr, reinterpret_cast<char*>(sums.data()),
                                    reinterpret_cast<char*>(sums.data())})
                           .withContext("agreeing on measured link costs"));
  ctx->reduceBytesPerSecond = sums[6] / comm->nranks();
  // No link moves bytes faster than memory does: a transfer is at least one copy.
  auto bandwidth = [&](double transferSum, double count) {
    return std::min(static_cast<double>(kLargeBytes) / (transferSum / count),
                    ctx->reduceBytesPerSecond);
  };
  char source[160];
  int len = snprintf(source, sizeof(source), "measured at init:");
  if (sums[2] > 0) {
    ctx->scheduleOverheadSeconds = sums[7] / sums[2];
    ctx->intraAlphaSeconds = sums[0] / sums[2];
    ctx->intraBytesPerSecond = bandwidth(sums[1], sums[2]);
    ctx->intraRateShared = together;
    len += snprintf(source + len, sizeof(source) - len, " intra %.1f us %.2f GB/s%s (+%.1f us/op)",
                    ctx->intraAlphaSeconds * 1e6, ctx->intraBytesPerSecond * 1e-9,
                    together ? " per pair, all at once" : "", ctx->scheduleOverheadSeconds * 1e6);
  }
  if (sums[5] > 0) {
    ctx->interAlphaSeconds = sums[3] / sums[5];
    ctx->interBytesPerSecond = bandwidth(sums[4], sums[5]);
    snprintf(source + len, sizeof(source) - len, " inter %.1f us %.2f GB/s",
             ctx->interAlphaSeconds * 1e6, ctx->interBytesPerSecond * 1e-9);
  }
  ctx->source = source;
  return Status::ok();
}

void copyLinkCosts(const SelectionContext& from, SelectionContext* to) {
  to->intraAlphaSeconds = from.intraAlphaSeconds;
  to->intraBytesPerSecond = from.intraBytesPerSecond;
  to->interAlphaSeconds = from.interAlphaSeconds;
  to->interBytesPerSecond = from.interBytesPerSecond;
  to->reduceBytesPerSecond = from.reduceBytesPerSecond;
  to->scheduleOverheadSeconds = from.scheduleOverheadSeconds;
  to->intraRateShared = from.intraRateShared;
  to->source = from.source;
}

}  // namespace bccl
