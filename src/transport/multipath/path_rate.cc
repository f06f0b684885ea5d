#include "transport/multipath/path_rate.h"

#include <cmath>

namespace bccl {

void PathRate::observeRtt(int64_t rtt, int64_t nowNs) {
  if (rtt > 0 && (minRttNs_ == 0 || rtt < minRttNs_ || nowNs - minRttSetNs_ > kRttWindowNs)) {
    minRttNs_ = rtt;
    minRttSetNs_ = nowNs;
  }
}

void PathRate::onDelivered(uint64_t bytes, int64_t nowNs, bool stillInFlight, bool appLimited) {
  // Rate between acknowledgements, not from the send: the first acknowledgement after an idle
  // spell comes a round trip late, which says nothing about the bandwidth.
  if (intervalStartNs_ < 0) {
    intervalStartNs_ = stillInFlight ? nowNs : -1;
    intervalBytes_ = 0;
    return;
  }
  intervalBytes_ += bytes;
  const int64_t elapsed = nowNs - intervalStartNs_;
  if (elapsed >= kMinSampleNs) {
    const double sample = static_cast<double>(intervalBytes_) * 1e9 / static_cast<double>(elapsed);
    if (rate_ <= 0) {
      rate_ = sample;
    } else if (!appLimited || sample > rate_) {
      // Weighted by elapsed time, so the estimate's memory is tau whatever the ack rate.
      const double w = 1.0 - std::exp(-static_cast<double>(elapsed) / static_cast<double>(tauNs_));
      rate_ += w * (sample - rate_);
    }
    intervalStartNs_ = nowNs;
    intervalBytes_ = 0;
  }
  if (!stillInFlight) intervalStartNs_ = -1;
}

void PathRate::reset() {
  rate_ = 0;
  intervalStartNs_ = -1;
  intervalBytes_ = 0;
  minRttNs_ = 0;
  minRttSetNs_ = 0;
}

}  // namespace bccl
