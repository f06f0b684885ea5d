// Time limits for waits. Every blocking loop in bccl takes a Deadline and an abort flag, so that
// no call can wait forever on a peer that vanished.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace bccl {

using SteadyClock = std::chrono::steady_clock;

inline int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

class Deadline {
 public:
  static Deadline afterMs(int64_t ms) { return Deadline(nowNs() + ms * 1000000); }
  static Deadline never() { return Deadline(INT64_MAX); }
  bool expired() const { return nowNs() >= atNs_; }
  // Milliseconds left, clamped to [0, capMs], for poll()-style timeouts.
  int remainingMs(int capMs) const {
    if (atNs_ == INT64_MAX) return capMs;
    int64_t left = (atNs_ - nowNs() + 999999) / 1000000;
    return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(left, capMs)));
  }
  int64_t atNs() const { return atNs_; }

 private:
  explicit Deadline(int64_t atNs) : atNs_(atNs) {}
  int64_t atNs_;
};

// What a wait checks besides its deadline: an abort request from any thread.
using AbortFlag = std::atomic<bool>;

}  // namespace bccl
