// Schedule builders of the topology-aware issue: trees, recursive doubling / halving and Bruck.
// They complement builders.h (ring, chain, pairwise) so that selection can trade latency against
// bandwidth; each has the same shape-in, schedule-out signature and the same buffer conventions
// (buffer 1 = send, 2 = receive, 0 = scratch), so select.cc can swap them freely.
#pragma once

#include "algorithms/builders.h"

namespace bccl {

// tree.cc. Allreduce on two complementary binary trees (a rank is interior in at most one), each
// reducing then broadcasting half of the data, pipelined by chunks: log-depth latency with about
// the ring's bandwidth. Broadcast and reduce on one binary tree rooted at shape.root.
Schedule buildTreeAllReduce(const CollectiveShape& shape);
Schedule buildTreeBroadcast(const CollectiveShape& shape);
Schedule buildTreeReduce(const CollectiveShape& shape);

// recursive.cc. "rd": recursive doubling allreduce (log2 n rounds exchanging the whole buffer,
// for small messages) and allgather. "rhd": Rabenseifner allreduce (reduce-scatter by recursive
// halving, then allgather by recursive doubling) and recursive-halving reduce-scatter. With a
// non-power-of-two nranks the first 2*(n - 2^k) ranks pair up: the even one folds its data into
// the odd one, sits out, and gets the result back at the end.
Schedule buildRecursiveDoublingAllReduce(const CollectiveShape& shape);
Schedule buildRecursiveDoublingAllGather(const CollectiveShape& shape);
Schedule buildRabenseifnerAllReduce(const CollectiveShape& shape);
Schedule buildRecursiveHalvingReduceScatter(const CollectiveShape& shape);

// bruck.cc. Allgather in ceil(log2 n) rounds for any n, gathered rotated in scratch and put in
// rank order by local copies.
Schedule buildBruckAllGather(const CollectiveShape& shape);

}  // namespace bccl
