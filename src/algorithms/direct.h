// "direct": collectives over the shared-memory boards (transport/shm/shm_board.h), for a
// communicator whose ranks all share memory. Every rank posts its input on its own board and
// reads the others' straight from theirs: one post and one wait per collective, no messages.
// Reductions combine inputs in rank order (each block on one rank, or on every rank alike), so
// all ranks get identical bits. Allgathers, reduce-scatters and allreduces larger than a board
// area go in rounds of one area each.
#pragma once

#include <cstddef>

#include "algorithms/collective.h"
#include "algorithms/executor.h"

namespace bccl {

// Bytes a rank posts for this collective (what must fit a board area).
size_t directPostBytes(const OpArgs& args, int nranks);
// Allgathers, reduce-scatters and allreduces go a board area at a time: the bytes of each rank's
// block (an allreduce's whole input) one round moves (a reduce-scatter's or allreduce's post holds
// a piece of every block, in whole elements), 0 when not even one element fits (or the
// collective has no rounds).
size_t directRoundBytes(const OpArgs& args, int nranks, size_t capacity);
// Whether a direct allgather writes its output around the cache (non-temporal stores): when the
// output is larger than this rank's share of the cache (0: unknown, never).
bool directOutputStreams(size_t outputBytes, size_t cacheBytesPerRank);
// Runs one plan whose compiled schedule is marked direct: waits for its turn, posts, waits,
// combines. Failures are recorded on the communicator like an executor's.
Status runDirectPlan(Plan* plan);

}  // namespace bccl
