// What a collective's buffers look like and what they must hold afterwards, for symbolic tests:
// where the send and receive buffers sit in a rank's memory (in-place aliasing as the API
// defines it) and the exact expected value of every receive element. Shared by every test that
// checks a schedule builder, so the conventions live in one place.
#pragma once

#include <cstddef>
#include <vector>

#include "bccl/bccl.h"
#include "sim/schedule_sim.h"

namespace bccl::sim {

enum class Coll {
  kAllReduce,
  kAllGather,
  kReduceScatter,
  kBroadcast,
  kReduce,
  kAllToAll,
  kBarrier
};

Layout layoutFor(Coll coll, int nranks, size_t count, bool inPlace, int rank);

// The value receive element `i` of `rank` must hold, or an invalid Sym for "not written".
Sym expectedElement(Coll coll, int nranks, size_t count, bcclRedOp_t op, int root, int rank,
                    size_t i);

// Every rank contributed once to element `tag`, averaged `scaled` times.
Sym allOf(int nranks, long tag, int scaled);

// A ring order unlike rank order (for CollectiveShape::ringOrder): the even ranks going up,
// then the odd ones coming down.
std::vector<int> shuffledOrder(int nranks);

}  // namespace bccl::sim
