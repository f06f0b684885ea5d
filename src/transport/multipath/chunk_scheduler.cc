#include "transport/multipath/chunk_scheduler.h"

#include <algorithm>

namespace bccl {
namespace {

// Time a path's queue may hold beyond two round trips: the sender may be descheduled this long
// (ranks share cores) without the path running dry. More makes a slowed path's queue slower to
// drain (at most this long at its old rate).
constexpr double kQueueMarginSec = 0.050;

}  // namespace

int pickPath(const std::vector<PathLoad>& paths, uint64_t chunk, uint64_t backlog) {
  // Unmeasured paths count as average ones (or all alike when none is measured yet).
  double known = 0;
  int nKnown = 0;
  for (const PathLoad& p : paths)
    if (p.up && p.rate > 0) {
      known += p.rate;
      ++nKnown;
    }
  const double fallback = nKnown > 0 ? known / nKnown : 1.0;
  auto rateOf = [fallback](const PathLoad& p) { return p.rate > 0 ? p.rate : fallback; };

  double sumRate = 0, sumInflight = 0;
  for (const PathLoad& p : paths)
    if (p.up) {
      sumRate += rateOf(p);
      sumInflight += static_cast<double>(p.inflight);
    }
  if (sumRate <= 0) return -1;
  // When everything queued and waiting would be done if all paths worked together.
  const double jointFinish = (sumInflight + static_cast<double>(backlog)) / sumRate;

  int best = -1, bestReady = -1;
  double bestFinish = 0, bestReadyFinish = 0;
  for (size_t i = 0; i < paths.size(); ++i) {
    const PathLoad& p = paths[i];
    if (!p.up) continue;
    const double finish = static_cast<double>(p.inflight + chunk) / rateOf(p);
    if (best < 0 || finish < bestFinish) {
      best = static_cast<int>(i);
      bestFinish = finish;
    }
    const bool room = p.inflight == 0 || p.inflight + chunk <= p.window;
    if (p.ready && room && (bestReady < 0 || finish < bestReadyFinish)) {
      bestReady = static_cast<int>(i);
      bestReadyFinish = finish;
    }
  }
  if (bestReady < 0) return -1;
  if (bestReady == best) return bestReady;
  // The path that would deliver it first is full: another may take it only if the chunk would
  // still arrive before the joint finish; otherwise waiting for the better path is faster.
  return bestReadyFinish <= jointFinish ? bestReady : -1;
}

uint64_t pathWindow(double rate, int64_t minRttNs, uint64_t minWindow, uint64_t maxWindow) {
  // Unmeasured: start small; a window-limited path measures window / RTT, so it grows fast.
  if (rate <= 0) return minWindow;
  const double seconds = 2.0 * static_cast<double>(minRttNs) / 1e9 + kQueueMarginSec;
  const double w = rate * seconds;
  if (w >= static_cast<double>(maxWindow)) return maxWindow;
  return std::max(minWindow, static_cast<uint64_t>(w));
}

}  // namespace bccl
