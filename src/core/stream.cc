#include "core/stream.h"

#include <sched.h>

#include "core/deadline.h"

namespace bccl {

namespace {
constexpr int64_t kPollNs = 50 * 1000;
}

template <class Ready>
bool Stream::pollBriefly(Ready ready) {
  const int64_t until = nowNs() + kPollNs;
  do {
    if (ready()) return true;
    sched_yield();
  } while (nowNs() < until);
  return ready();
}

Stream::Stream() : thread_([this] { run(); }) {}

Stream::~Stream() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  workReady_.notify_all();
  thread_.join();
}

void Stream::enqueue(std::function<Status()> work, bool poll) {
  poll_.store(poll);
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(work));
    enqueued_.fetch_add(1);
  }
  workReady_.notify_one();
}

Status Stream::synchronize() {
  const uint64_t target = enqueued_.load();
  if (poll_.load()) pollBriefly([&] { return finished_.load() >= target; });
  std::unique_lock<std::mutex> lock(mu_);
  // Each queued operation is bounded by its communicator's deadline, so this wait is too.
  drained_.wait(lock, [this] { return queue_.empty() && !busy_; });
  Status st = firstError_;
  firstError_ = Status::ok();
  return st;
}

bool Stream::idle() {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.empty() && !busy_;
}

void Stream::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (queue_.empty() && !stopping_) {
      const uint64_t taken = finished_.load();
      lock.unlock();
      if (poll_.load()) pollBriefly([&] { return enqueued_.load() > taken; });
      lock.lock();
    }
    workReady_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything ran
    std::function<Status()> work = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    Status st = work();
    lock.lock();
    busy_ = false;
    if (!st.isOk() && firstError_.isOk()) firstError_ = st;
    finished_.fetch_add(1);
    if (queue_.empty()) drained_.notify_all();
  }
}

}  // namespace bccl
