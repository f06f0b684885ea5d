// A named POSIX shared-memory mapping. The owner creates the name before the rendezvous (so it
// exists once everyone has joined), sizes it after, and unlinks it once every local peer has
// mapped it, so a crash afterwards leaks nothing in /dev/shm.
#pragma once

#include <string>

#include "core/deadline.h"
#include "core/status.h"

namespace bccl {

class ShmSegment {
 public:
  ShmSegment() = default;
  ~ShmSegment();
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  // Owner side: reserve the name, then give it its size and map it.
  Status create(const std::string& name);
  Status allocate(size_t bytes);
  // Peer side: waits until the name exists with at least `bytes`, then maps it.
  Status open(const std::string& name, size_t bytes, Deadline deadline, const AbortFlag* abort);
  void unlink();
  char* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  Status map(int fd, size_t bytes);

  std::string name_;
  int fd_ = -1;
  char* data_ = nullptr;
  size_t bytes_ = 0;
  bool owner_ = false;
};

}  // namespace bccl
