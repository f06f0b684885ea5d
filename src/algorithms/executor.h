// Runs schedules. One executor drives any number of plans at once (a group may span several
// communicators, e.g. one thread driving several ranks), posting each step when its
// dependencies are done, progressing the transports, and sleeping politely when nothing moves.
// Every wait is bounded: by the communicator's timeout without progress, its abort flag, and
// peer liveness checks.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "algorithms/collective.h"
#include "algorithms/compiled_schedule.h"
#include "algorithms/exec_context.h"

namespace bccl {

struct Plan {
  ExecContext* ctx = nullptr;
  uint64_t ticket = 0;
  std::shared_ptr<const CompiledSchedule> compiled;
  // buffers[i] for schedule buffer i >= 1; buffers[0] (scratch) is filled in at start.
  std::vector<char*> buffers;
  OpArgs args;    // the call itself, for plans that run without a schedule (compiled->direct)
  Status status;  // the plan's outcome
};

// Runs every plan to completion or failure; returns the first failure (each plan's own outcome
// is in its status). Plans of one communicator must be in ticket order.
Status executePlans(std::vector<Plan*>& plans);
// One plan on its own (the blocking single-collective call).
Status executePlan(Plan* plan);

}  // namespace bccl
