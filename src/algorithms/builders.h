// Schedule builders: each turns one collective's arguments into this rank's schedule. Buffer 1
// is the send buffer, buffer 2 the receive buffer (kScratchBuffer is 0). Segment and chunk
// arithmetic lives in partition.h so every builder splits data the same way on every rank.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "algorithms/schedule.h"

namespace bccl {

constexpr uint16_t kSendBuffer = 1;
constexpr uint16_t kRecvBuffer = 2;

struct CollectiveShape {
  int rank = 0;
  int nranks = 1;
  size_t count = 0;  // elements, as the API defines it for the collective
  bcclDataType_t dtype = bcclFloat32;
  bcclRedOp_t op = bcclSum;
  int root = 0;
  bool inPlace = false;         // as the API defines in-place for the collective
  size_t chunkBytes = 1 << 19;  // pipelining granularity
  // Chunk offsets the ring moves per window (ring.cc); 0: all of them, the deepest pipeline.
  size_t ringWindow = 0;
  // The ring's order: position p holds rank ringOrder[p]. Empty: rank order. Only the flat
  // rings read it (a subgroup's shape leaves it empty).
  std::vector<int> ringOrder;
};

// Where this rank sits in the shape's ring, and who sits where.
class RingPositions {
 public:
  explicit RingPositions(const CollectiveShape& s)
      : order_(s.ringOrder.size() == static_cast<size_t>(s.nranks) ? &s.ringOrder : nullptr),
        n_(s.nranks),
        me_(s.rank) {
    if (order_ != nullptr)
      for (int p = 0; p < n_; ++p)
        if ((*order_)[static_cast<size_t>(p)] == s.rank) me_ = p;
  }
  // The rank at position `p`, taken modulo the ring's size (negative positions too).
  int at(long p) const {
    const int q = static_cast<int>(((p % n_) + n_) % n_);
    return order_ != nullptr ? (*order_)[static_cast<size_t>(q)] : q;
  }
  int me() const { return me_; }  // this rank's position
  int next() const { return at(me_ + 1L); }
  int prev() const { return at(me_ - 1L); }

 private:
  const std::vector<int>* order_;
  int n_;
  int me_;
};

constexpr uint32_t kNoStep = UINT32_MAX;
// A schedule with the shape's rank, type and op, send and receive buffers, no steps yet.
Schedule startSchedule(const CollectiveShape& shape, const char* algorithm);
// With one rank a collective is a local copy from the send to the receive buffer (none in place).
void addSingleRankCopy(Schedule* sch, const CollectiveShape& shape);
// {step}, or {} for kNoStep: a dependency that may not exist.
std::vector<uint32_t> depsOf(uint32_t step);

// An allreduce leaves the same result on every rank whatever place each takes in its
// algorithm, so the tree and the recursive algorithms run with the ranks placed in ring order
// too (rank ringOrder[p] in place p): their nearest partners, which exchange the most, then
// share a core as ring neighbours do. Not for collectives whose result depends on the rank.
Schedule buildInRingOrder(Schedule (*build)(const CollectiveShape&), CollectiveShape shape);

Schedule buildRingAllReduce(const CollectiveShape& shape);
Schedule buildRingAllGather(const CollectiveShape& shape);
Schedule buildRingReduceScatter(const CollectiveShape& shape);
Schedule buildChainBroadcast(const CollectiveShape& shape);
Schedule buildChainReduce(const CollectiveShape& shape);
Schedule buildPairwiseAllToAll(const CollectiveShape& shape);
Schedule buildDisseminationBarrier(const CollectiveShape& shape);

}  // namespace bccl
