// A host stream: a queue of work run in order by one background thread, so a caller can
// enqueue collectives and carry on. Ops of several communicators may share a stream; their
// order on the stream is their order of execution.
//
// Both hand-offs (caller -> stream thread, stream thread -> synchronize) first poll briefly with
// sched_yield before blocking: a condition-variable wake-up costs several microseconds, more
// than a small collective, while a yielding poller gives its core to anyone runnable.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "core/status.h"

namespace bccl {

class Stream {
 public:
  Stream();
  ~Stream();  // runs what is queued, then stops the thread
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // `poll`: whether the hand-offs may poll (false when ranks outnumber cores: then a poller
  // only delays the thread it waits for); the latest enqueue decides.
  void enqueue(std::function<Status()> work, bool poll = true);
  // Waits until everything enqueued so far has run; returns (and clears) the first error.
  Status synchronize();
  bool idle();

 private:
  void run();
  // Polls `ready` with sched_yield for a short while; returns whether it became true.
  template <class Ready>
  static bool pollBriefly(Ready ready);

  std::mutex mu_;
  std::condition_variable workReady_;
  std::condition_variable drained_;
  std::deque<std::function<Status()>> queue_;
  bool busy_ = false;
  std::atomic<uint64_t> enqueued_{0}, finished_{0};
  std::atomic<bool> poll_{true};
  bool stopping_ = false;
  Status firstError_;
  std::thread thread_;
};

}  // namespace bccl
