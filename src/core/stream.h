// A host stream: a queue of work run in order by one background thread, so a caller can
// enqueue collectives and carry on. Ops of several communicators may share a stream; their
// order on the stream is their order of execution.
#pragma once

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

  void enqueue(std::function<Status()> work);
  // Waits until everything enqueued so far has run; returns (and clears) the first error.
  Status synchronize();
  bool idle();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable workReady_;
  std::condition_variable drained_;
  std::deque<std::function<Status()>> queue_;
  bool busy_ = false;
  bool stopping_ = false;
  Status firstError_;
  std::thread thread_;
};

}  // namespace bccl
