// The transports may complete a send only once the peer has received it (shm hands a large
// message over by letting the receiver read the sender's buffer). simulate() buffers sends, so
// it cannot see two ranks that each wait, before receiving, for a send to the other to finish.
// This replays a set of schedules without data under that strictest rule, for any builder's test.
#pragma once

#include <string>
#include <vector>

#include "algorithms/schedule.h"

namespace bccl::sim {

// Schedules of ranks 0..n-1. Each send and receive is posted in schedule order per peer and
// direction once its dependencies are done; a send completes when its matching receive has, a
// receive when its send is posted; local steps complete when ready. Returns "" when every step
// completes, else the first step that never does (or a message without a match).
std::string rendezvousDeadlock(const std::vector<Schedule>& schedules);

}  // namespace bccl::sim
