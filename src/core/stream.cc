#include "core/stream.h"

namespace bccl {

Stream::Stream() : thread_([this] { run(); }) {}

Stream::~Stream() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  workReady_.notify_all();
  thread_.join();
}

void Stream::enqueue(std::function<Status()> work) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(work));
  }
  workReady_.notify_one();
}

Status Stream::synchronize() {
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
    if (queue_.empty()) drained_.notify_all();
  }
}

}  // namespace bccl
