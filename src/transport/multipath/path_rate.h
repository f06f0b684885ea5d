// What one path delivers: its delivery rate and round-trip time, measured from the peer's
// acknowledgements alone, so any transport whose completions say "these bytes arrived" (TCP
// frames acknowledged by the receiver, verbs work completions) can feed it. The scheduler
// (chunk_scheduler.h) weighs paths by these figures; they follow a slowed path within a few
// time constants (BCCL_PATH_RATE_TAU_MS, a fraction of a second).
#pragma once

#include <cstdint>

namespace bccl {

class PathRate {
 public:
  explicit PathRate(int64_t tauNs) : tauNs_(tauNs > 0 ? tauNs : 1) {}

  // `bytes` were acknowledged at `nowNs`; `sentNs` is when the newest of them was handed to the
  // path; `stillInFlight` whether unacknowledged bytes remain; `appLimited` whether the sender
  // had nothing waiting to send meanwhile (such a sample shows what the sender offered, not what
  // the path can carry, so it may only raise the estimate).
  void onAck(uint64_t bytes, int64_t sentNs, int64_t nowNs, bool stillInFlight, bool appLimited) {
    observeRtt(nowNs - sentNs, nowNs);
    onDelivered(bytes, nowNs, stillInFlight, appLimited);
  }
  // The same from a transport that reports deliveries and round trips separately (TCP_INFO).
  void onDelivered(uint64_t bytes, int64_t nowNs, bool stillInFlight, bool appLimited);
  void observeRtt(int64_t rttNs, int64_t nowNs);
  // The path went idle or was replaced: the next acknowledgement starts a new measurement.
  void restartInterval() { intervalStartNs_ = -1; }
  // Forgets everything (a reconnected path is a new path).
  void reset();

  bool known() const { return rate_ > 0; }
  double bytesPerSec() const { return rate_; }
  // Smallest round trip seen recently (0 until measured): the base of the window.
  int64_t minRttNs() const { return minRttNs_; }

 private:
  // Shorter intervals are dominated by how acknowledgements bunch, not by the path.
  static constexpr int64_t kMinSampleNs = 2000000;
  // The minimum round trip is re-learnt this often, so a route that got longer is noticed.
  static constexpr int64_t kRttWindowNs = 10000000000LL;

  const int64_t tauNs_;
  double rate_ = 0;
  int64_t intervalStartNs_ = -1;  // first acknowledgement of the current busy interval
  uint64_t intervalBytes_ = 0;    // acknowledged since then
  int64_t minRttNs_ = 0;
  int64_t minRttSetNs_ = 0;
};

}  // namespace bccl
