// From validated operations to running plans: builds every schedule, takes each communicator's
// turns in issue order, then runs the plans here (no stream) or queues them on a stream.
#pragma once

#include <vector>

#include "algorithms/collective.h"
#include "api/handles.h"

namespace bccl {

struct PendingOp {
  bcclComm* comm;
  OpArgs args;
  bcclStream* stream;
};

Status launchOps(const std::vector<PendingOp>& ops);
// One operation outside a group (no vector to build for the common call).
Status launchOne(const PendingOp& op);

}  // namespace bccl
