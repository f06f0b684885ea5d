// The first algorithms for the rooted and personalised collectives: a pipelined chain for
// broadcast and reduce (bandwidth-optimal, latency grows with nranks: the tree issue replaces it
// at scale), pairwise exchange for alltoall, and a dissemination barrier (log2(n) rounds).
#include "algorithms/builders.h"
#include "algorithms/partition.h"
#include "core/dtype.h"

namespace bccl {

Schedule startSchedule(const CollectiveShape& s, const char* algorithm) {
  Schedule sch;
  sch.algorithm = algorithm;
  sch.rank = s.rank;
  sch.nranks = s.nranks;
  sch.dtype = s.dtype;
  sch.op = s.op;
  sch.elemSize = dtypeSize(s.dtype);
  sch.numBuffers = 3;
  return sch;
}

void addSingleRankCopy(Schedule* sch, const CollectiveShape& s) {
  if (!s.inPlace && s.count > 0)
    sch->add(copyStep(sch->at(kRecvBuffer, 0), sch->at(kSendBuffer, 0), s.count * sch->elemSize));
}

std::vector<uint32_t> depsOf(uint32_t step) {
  return step == kNoStep ? std::vector<uint32_t>{} : std::vector<uint32_t>{step};
}

Schedule buildChainBroadcast(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "chain");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  const int pos = modRank(r - s.root, n);
  if (pos == 0 && !s.inPlace && s.count > 0)
    sch.add(copyStep(sch.at(kRecvBuffer, 0), sch.at(kSendBuffer, 0), s.count * es));
  if (n == 1) return sch;
  const int next = modRank(r + 1, n), prev = modRank(r - 1, n);
  const size_t per = chunkElems(s.chunkBytes, es);
  const Span whole{0, s.count};
  for (size_t j = 0; j < numChunks(whole, per); ++j) {
    Span c = chunkOf(whole, per, j);
    uint32_t got = kNoStep;
    if (pos > 0) got = sch.add(recvStep(prev, sch.at(kRecvBuffer, c.offset), c.count * es));
    if (pos < n - 1)
      sch.add(sendStep(next, sch.at(pos == 0 ? kSendBuffer : kRecvBuffer, c.offset), c.count * es),
              depsOf(got));
  }
  return sch;
}

Schedule buildChainReduce(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "chain");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  if (n == 1) {
    addSingleRankCopy(&sch, s);
    return sch;
  }
  // The chain starts right after the root and ends at it.
  const int pos = modRank(r - s.root - 1, n);
  const bool isRoot = pos == n - 1;
  if (pos > 0 && !isRoot) sch.scratchBytes = s.count * es;
  const int next = modRank(r + 1, n), prev = modRank(r - 1, n);
  const size_t per = chunkElems(s.chunkBytes, es);
  const Span whole{0, s.count};
  for (size_t j = 0; j < numChunks(whole, per); ++j) {
    Span c = chunkOf(whole, per, j);
    if (pos == 0) {
      sch.add(sendStep(next, sch.at(kSendBuffer, c.offset), c.count * es));
      continue;
    }
    uint16_t into = isRoot ? kRecvBuffer : kScratchBuffer;
    uint32_t got = sch.add(
        recvReduceStep(prev, sch.at(into, c.offset), sch.at(kSendBuffer, c.offset), c.count * es));
    if (!isRoot)
      sch.add(sendStep(next, sch.at(kScratchBuffer, c.offset), c.count * es), {got});
    else if (s.op == bcclAvg)
      sch.add(scaleStep(sch.at(kRecvBuffer, c.offset), sch.at(kRecvBuffer, c.offset), c.count * es),
              {got});
  }
  return sch;
}

Schedule buildPairwiseAllToAll(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "pairwise");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  const size_t block = s.count * es;
  if (block == 0) return sch;
  // In place, a block may be overwritten by a receive before it was sent: send from a copy.
  uint16_t from = kSendBuffer;
  uint32_t copied = kNoStep;
  if (s.inPlace) {
    sch.scratchBytes = n * block;
    copied = sch.add(copyStep(BufRef{kScratchBuffer, 0}, BufRef{kSendBuffer, 0}, n * block));
    from = kScratchBuffer;
  } else {
    sch.add(copyStep(BufRef{kRecvBuffer, r * block}, BufRef{kSendBuffer, r * block}, block));
  }
  for (int k = 1; k < n; ++k) {
    int to = modRank(r + k, n), src = modRank(r - k, n);
    sch.add(sendStep(to, BufRef{from, to * block}, block), depsOf(copied));
    sch.add(recvStep(src, BufRef{kRecvBuffer, src * block}, block), depsOf(copied));
  }
  return sch;
}

Schedule buildDisseminationBarrier(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "dissemination");
  const int n = s.nranks, r = s.rank;
  int rounds = 0;
  for (int k = 1; k < n; k *= 2) ++rounds;
  sch.scratchBytes = 1 + rounds;
  // Round k's signal may leave only once every earlier round's signal arrived: receives
  // complete in any order, and the one from round k-1 alone does not carry round k-2's news.
  std::vector<uint32_t> received;
  int round = 0;
  for (int k = 1; k < n; k *= 2, ++round) {
    sch.add(sendStep(modRank(r + k, n), BufRef{kScratchBuffer, 0}, 1), received);
    received.push_back(sch.add(
        recvStep(modRank(r - k, n), BufRef{kScratchBuffer, 1 + static_cast<size_t>(round)}, 1)));
  }
  return sch;
}

}  // namespace bccl
