#include "transport/wait_set.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <ctime>

namespace bccl {
namespace {

void futexWait(std::atomic<uint32_t>* word, uint32_t expected, int timeoutUs) {
  timespec ts{timeoutUs / 1000000, (timeoutUs % 1000000) * 1000L};
  // Not FUTEX_PRIVATE: the word is shared between processes.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

// While both sockets and doorbells are involved, neither blocking primitive sees both, so the
// waiter alternates in short slices.
constexpr int kMixedSliceUs = 200;

}  // namespace

void ringDoorbell(Doorbell* bell) {
  bell->seq.fetch_add(1, std::memory_order_seq_cst);
  if (bell->sleepers.load(std::memory_order_seq_cst) != 0) futexWakeAll(&bell->seq);
}

void WaitSet::clear() {
  fds_.clear();
  bells_.clear();
  snapshots_.clear();
  armed_ = false;
}

void WaitSet::addFd(int fd, short events) {
  for (pollfd& p : fds_)
    if (p.fd == fd) {
      p.events |= events;
      return;
    }
  fds_.push_back({fd, events, 0});
}

void WaitSet::addDoorbell(Doorbell* bell) {
  if (std::find(bells_.begin(), bells_.end(), bell) == bells_.end()) bells_.push_back(bell);
}

void WaitSet::arm() {
  snapshots_.resize(bells_.size());
  for (size_t i = 0; i < bells_.size(); ++i) {
    bells_[i]->sleepers.fetch_add(1, std::memory_order_seq_cst);
    snapshots_[i] = bells_[i]->seq.load(std::memory_order_seq_cst);
  }
  armed_ = true;
}

void WaitSet::disarm() {
  if (!armed_) return;
  for (Doorbell* b : bells_) b->sleepers.fetch_sub(1, std::memory_order_seq_cst);
  armed_ = false;
}

void WaitSet::wait(int timeoutUs) {
  if (bells_.size() == 1 && fds_.empty()) {
    futexWait(&bells_[0]->seq, snapshots_[0], timeoutUs);
    return;
  }
  if (bells_.empty()) {
    int ms = std::max(1, timeoutUs / 1000);
    poll(fds_.data(), fds_.size(), fds_.empty() ? 0 : ms);
    if (fds_.empty()) usleep(static_cast<useconds_t>(timeoutUs));
    return;
  }
  // Mixed: check sockets without blocking, then nap on the first doorbell briefly.
  if (!fds_.empty() && poll(fds_.data(), fds_.size(), 0) > 0) return;
  for (size_t i = 0; i < bells_.size(); ++i)
    if (bells_[i]->seq.load() != snapshots_[i]) return;
  futexWait(&bells_[0]->seq, snapshots_[0], std::min(timeoutUs, kMixedSliceUs));
}

}  // namespace bccl
