// Changing who is in a communicator, with no fixed coordinator: shrink (leave failed or excluded
// ranks out), split (by color and key) and agree (survivors agree on a flag and the failed
// set). The lowest-ranked member still alive coordinates, over the parent's own listener; if it
// dies meanwhile, the failure detector says so and the next one takes over. Rank 0 may be gone.
#pragma once

#include <memory>
#include <vector>

#include "core/comm.h"

namespace bccl {

enum class ChildOp : uint32_t { kShrink = 1, kSplit = 2, kAgree = 3 };

struct ChildRequest {
  ChildOp op = ChildOp::kShrink;
  std::vector<int> exclude;  // shrink: leave these out too (besides the known failed)
  int flag = 1;              // agree: this rank's vote
  int color = 0;             // split: negative = no new communicator for this rank
  int key = 0;               // split: order within the color
};

struct ChildResult {
  int agreedFlag = 1;       // agree: AND of every member's flag
  std::vector<int> failed;  // the failed (or excluded) parent ranks the coordinator settled on
  std::unique_ptr<Communicator> comm;  // shrink, split: null when this rank gets none
};

// Collective over the parent's surviving members; every one must call it in the same order.
StatusOr<ChildResult> runChildOp(Communicator& parent, const ChildRequest& request,
                                 const CommConfig& config);

}  // namespace bccl
