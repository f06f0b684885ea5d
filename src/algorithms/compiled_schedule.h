// A schedule plus the indexes the executor needs (who depends on whom, each peer's sends and
// receives in order), computed once so that a repeated collective costs no set-up: schedules are
// cached per communicator by the shape of the call.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "algorithms/schedule.h"

namespace bccl {

struct CompiledSchedule {
  struct PeerSteps {
    int peer;
    std::vector<uint32_t> sends, recvs;  // step indices in schedule order
  };
  Schedule schedule;
  // No steps: the collective runs over the shared-memory boards (algorithms/direct.h).
  bool direct = false;
  // A direct allreduce as a reduce-scatter round then an allgather round per board area, not
  // one post combined by every rank (the cost model's pick; always past the board's capacity).
  bool directInRounds = false;
  std::vector<uint32_t> dependentsBegin;  // CSR: dependents of step i are
  std::vector<uint32_t> dependents;       // dependents[dependentsBegin[i] .. dependentsBegin[i+1])
  std::vector<PeerSteps> peers;
  std::vector<int32_t> queueOfStep;    // index into peers, -1 for local steps
  std::vector<uint32_t> readyAtStart;  // local steps without dependencies
};

std::shared_ptr<const CompiledSchedule> compileSchedule(Schedule schedule);

// Every argument of a collective call that its schedule depends on (buffer addresses only
// through in-place-ness); the communicator supplies the rest, and it does not change.
struct ScheduleKey {
  int kind, dtype, op, root;
  bool inPlace;
  bool allowDirect;
  size_t count;
  bool operator==(const ScheduleKey& o) const {
    return kind == o.kind && dtype == o.dtype && op == o.op && root == o.root &&
           inPlace == o.inPlace && allowDirect == o.allowDirect && count == o.count;
  }
};

// A small most-recently-used cache of compiled schedules. Each thread also remembers its last
// hit: a training loop repeats one call shape, and at a few hundred nanoseconds per tiny
// collective the lock and list walk were a noticeable part of the call.
class ScheduleCache {
 public:
  ScheduleCache();
  std::shared_ptr<const CompiledSchedule> find(const ScheduleKey& key);
  void insert(const ScheduleKey& key, std::shared_ptr<const CompiledSchedule> schedule);

 private:
  static constexpr size_t kCapacity = 32;
  const uint64_t id_;  // unique for the process's lifetime, unlike the cache's address
  std::mutex mu_;
  std::list<std::pair<ScheduleKey, std::shared_ptr<const CompiledSchedule>>> entries_;
};

}  // namespace bccl
