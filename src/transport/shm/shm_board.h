// Boards: for a communicator whose ranks all share memory, each rank's segment holds a small
// board where the rank posts a whole (small) input, and every rank reads every board directly.
// A tiny allreduce is then one post and one wait, instead of log2(n) rounds of messages through
// the rings, and a barrier is a post of nothing. This is how MPI's shared-memory collectives
// reach sub-microsecond latency; the rings stay for everything larger.
//
// Each board has two areas used alternately by operation parity. A rank posts operation k+2
// into the area of k only after it saw every peer post k+1, and a peer posts k+1 only after it
// has finished reading everything of k: nothing is overwritten while someone reads it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "transport/shm/shm_layout.h"

namespace bccl {

class ShmBoard {
 public:
  // `segmentOfRank[r]` is rank r's mapped segment (every rank of the communicator).
  ShmBoard(int rank, std::vector<char*> segmentOfRank, size_t capacity);

  int nranks() const { return static_cast<int>(boards_.size()); }
  size_t capacity() const { return capacity_; }
  // The next operation's number; every rank runs the same sequence of board operations.
  uint64_t beginOp() { return ++ops_; }
  // Posts `bytes` of `data` as operation `seq` (1, 2, ...). Only a post that completes the
  // operation (it sees every rank's post of seq) wakes the sleepers, and only when someone
  // sleeps: a ring per post woke every sleeper n - 1 times in vain (with 8 ranks on 2 cores each
  // wake-up is a context switch), and touching the doorbell's line on every post cost a 2-rank
  // allreduce a cache-line transfer. `wakeAlways`: ring if anyone sleeps, for whoever waits for
  // this rank alone (a broadcast's root).
  void post(uint64_t seq, const void* data, size_t bytes, bool wakeAlways = false);
  // Whether `rank` has posted operation `seq` (its data is then visible; seq_cst, as the wake-up
  // handshake in post() needs).
  bool hasPosted(int rank, uint64_t seq) const;
  // What `rank` posted for operation `seq`; valid once hasPosted(rank, seq).
  const char* data(int rank, uint64_t seq) const;
  // The one doorbell every board waiter sleeps on: the last rank to post wakes all sleepers
  // with one futex call instead of one per rank.
  Doorbell* groupBell() const { return groupBell_; }

 private:
  int rank_;
  size_t capacity_;
  uint64_t ops_ = 0;
  std::vector<ShmBoardHeader*> boards_;
  Doorbell* groupBell_;
};

}  // namespace bccl
