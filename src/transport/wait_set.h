// Polite waiting. With more ranks than cores (8 ranks on 2 cores is normal here), a rank that
// spins steals the core its peer needs, so a waiter sleeps: on a futex "doorbell" in shared
// memory that shm peers ring after they publish or consume data, and/or in poll() on sockets.
// The arm / re-check / wait sequence closes the lost-wakeup window.
#pragma once

#include <poll.h>

#include <atomic>
#include <cstdint>
#include <vector>

namespace bccl {

// Lives in shared memory, one per rank; process-shared futex word.
struct Doorbell {
  std::atomic<uint32_t> seq{0};
  std::atomic<uint32_t> sleepers{0};
};

// Wakes whoever sleeps on `bell` (a cheap atomic increment when nobody does).
void ringDoorbell(Doorbell* bell);

class WaitSet {
 public:
  void clear();
  void addFd(int fd, short events);
  void addDoorbell(Doorbell* bell);
  // Announces the intent to sleep: after arm(), any ring or readable fd makes wait() return
  // at once, so callers arm, re-check for work, then wait.
  void arm();
  // Sleeps at most timeoutUs microseconds, or until woken. Always pair with disarm().
  void wait(int timeoutUs);
  void disarm();
  bool empty() const { return fds_.empty() && bells_.empty(); }

 private:
  std::vector<pollfd> fds_;
  std::vector<Doorbell*> bells_;
  std::vector<uint32_t> snapshots_;
  bool armed_ = false;
};

}  // namespace bccl
