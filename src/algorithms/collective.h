// One operation as the API received it, before any algorithm is chosen.
#pragma once

#include <cstddef>

#include <memory>
#include <vector>

#include "algorithms/compiled_schedule.h"
#include "algorithms/schedule.h"
#include "bccl/bccl.h"
#include "core/status.h"

namespace bccl {

enum class CollKind { kAllReduce, kAllGather, kReduceScatter, kBroadcast, kReduce, kAllToAll, kSend, kRecv, kBarrier };

const char* collName(CollKind kind);
inline bool isPointToPoint(CollKind k) { return k == CollKind::kSend || k == CollKind::kRecv; }

struct OpArgs {
  CollKind kind = CollKind::kBarrier;
  const void* sendbuf = nullptr;
  void* recvbuf = nullptr;
  size_t count = 0;
  bcclDataType_t dtype = bcclUint8;
  bcclRedOp_t op = bcclSum;
  int root = 0;  // rooted collectives
  int peer = -1;  // send / recv
};

// Chooses the algorithm for one collective and builds this rank's schedule. Buffer 1 is the
// send buffer, 2 the receive buffer.
StatusOr<Schedule> buildCollectiveSchedule(const OpArgs& args, int rank, int nranks);
// The same, compiled, from `cache` when the same call shape was seen before (cache may be null).
StatusOr<std::shared_ptr<const CompiledSchedule>> collectiveSchedule(const OpArgs& args, int rank, int nranks,
                                                                     ScheduleCache* cache);
// One schedule for a batch of sends and receives launched together (a group); buffer i + 1 is
// ops[i]'s buffer. Sends to and receives from oneself are matched locally, in order.
StatusOr<Schedule> buildPointToPointSchedule(const std::vector<OpArgs>& ops, int rank, int nranks);

}  // namespace bccl
