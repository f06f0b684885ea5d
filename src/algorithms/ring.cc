// Pipelined ring algorithms (allreduce, allgather, reduce-scatter): bandwidth-optimal, each
// rank sends and receives 2(n-1)/n (or (n-1)/n) of the data, one chunk at a time so that the
// next hop starts before the previous finishes.
#include <climits>
#include <vector>

#include "algorithms/builders.h"
#include "algorithms/partition.h"

namespace bccl {
Schedule buildRingAllReduce(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "ring");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  auto at = [es](uint16_t buf, size_t elem) { return BufRef{buf, elem * es}; };
  if (n == 1) {
    addSingleRankCopy(&sch, s);
    return sch;
  }
  const int next = modRank(r + 1, n), prev = modRank(r - 1, n);
  const size_t per = chunkElems(s.chunkBytes, es);
  // last[seg][chunk]: the step that produced the receive buffer's current value of that chunk.
  std::vector<std::vector<uint32_t>> last(n);
  for (int i = 0; i < n; ++i) last[i].assign(numChunks(segmentOf(s.count, n, i), per), kNoStep);
  std::vector<uint32_t> firstSends;  // sends of my own segment straight from the send buffer

  // Reduce-scatter phase: after n-1 steps rank r holds segment r+1 fully reduced.
  for (int step = 0; step < n - 1; ++step) {
    int sendSeg = modRank(r - step, n), recvSeg = modRank(r - step - 1, n);
    Span ss = segmentOf(s.count, n, sendSeg);
    for (size_t j = 0; j < numChunks(ss, per); ++j) {
      Span c = chunkOf(ss, per, j);
      uint16_t from = step == 0 ? kSendBuffer : kRecvBuffer;
      uint32_t id =
          sch.add(sendStep(next, at(from, c.offset), c.count * es), depsOf(last[sendSeg][j]));
      if (step == 0) firstSends.push_back(id);
    }
    Span rs = segmentOf(s.count, n, recvSeg);
    for (size_t j = 0; j < numChunks(rs, per); ++j) {
      Span c = chunkOf(rs, per, j);
      last[recvSeg][j] = sch.add(
          recvReduceStep(prev, at(kRecvBuffer, c.offset), at(kSendBuffer, c.offset), c.count * es));
    }
  }
  const int owned = modRank(r + 1, n);
  if (s.op == bcclAvg) {
    Span os = segmentOf(s.count, n, owned);
    for (size_t j = 0; j < numChunks(os, per); ++j) {
      Span c = chunkOf(os, per, j);
      last[owned][j] =
          sch.add(scaleStep(at(kRecvBuffer, c.offset), at(kRecvBuffer, c.offset), c.count * es),
                  depsOf(last[owned][j]));
    }
  }
  // Allgather phase: pass the reduced segments around the ring.
  for (int step = 0; step < n - 1; ++step) {
    int sendSeg = modRank(r + 1 - step, n), recvSeg = modRank(r - step, n);
    Span ss = segmentOf(s.count, n, sendSeg);
    for (size_t j = 0; j < numChunks(ss, per); ++j) {
      Span c = chunkOf(ss, per, j);
      sch.add(sendStep(next, at(kRecvBuffer, c.offset), c.count * es), depsOf(last[sendSeg][j]));
    }
    Span rs = segmentOf(s.count, n, recvSeg);
    for (size_t j = 0; j < numChunks(rs, per); ++j) {
      Span c = chunkOf(rs, per, j);
      // In place, my own segment's first send reads the memory this receive overwrites.
      uint32_t guard = recvSeg == r ? firstSends[j] : kNoStep;
      last[recvSeg][j] =
          sch.add(recvStep(prev, at(kRecvBuffer, c.offset), c.count * es), depsOf(guard));
    }
  }
  return sch;
}

Schedule buildRingAllGather(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "ring");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  auto at = [es](uint16_t buf, size_t elem) { return BufRef{buf, elem * es}; };
  const size_t block = s.count;
  if (n == 1) {
    if (!s.inPlace && block > 0)
      sch.add(copyStep(at(kRecvBuffer, 0), at(kSendBuffer, 0), block * es));
    return sch;
  }
  const int next = modRank(r + 1, n), prev = modRank(r - 1, n);
  const size_t per = chunkElems(s.chunkBytes, es);
  const Span whole{0, block};
  const size_t chunks = numChunks(whole, per);
  std::vector<std::vector<uint32_t>> last(n, std::vector<uint32_t>(chunks, kNoStep));
  for (int step = 0; step < n - 1; ++step) {
    int sendSeg = modRank(r - step, n), recvSeg = modRank(r - step - 1, n);
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      // My own block goes out straight from the send buffer, not waiting for the local copy.
      BufRef src =
          step == 0 ? at(kSendBuffer, c.offset) : at(kRecvBuffer, sendSeg * block + c.offset);
      uint32_t id = sch.add(sendStep(next, src, c.count * es), depsOf(last[sendSeg][j]));
      // Out of place, my own block is copied a chunk at a time right after that chunk went
      // out: the copy reads it from cache, and fills the time spent waiting for the ring.
      if (step == 0 && !s.inPlace)
        sch.add(copyStep(at(kRecvBuffer, r * block + c.offset), at(kSendBuffer, c.offset),
                         c.count * es),
                depsOf(id));
    }
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      last[recvSeg][j] =
          sch.add(recvStep(prev, at(kRecvBuffer, recvSeg * block + c.offset), c.count * es));
    }
  }
  return sch;
}

Schedule buildRingReduceScatter(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "ring");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  auto at = [es](uint16_t buf, size_t elem) { return BufRef{buf, elem * es}; };
  const size_t block = s.count;
  if (n == 1) {
    if (!s.inPlace && block > 0)
      sch.add(copyStep(at(kRecvBuffer, 0), at(kSendBuffer, 0), block * es));
    return sch;
  }
  sch.scratchBytes = static_cast<size_t>(n) * block * es;
  const int next = modRank(r + 1, n), prev = modRank(r - 1, n);
  const size_t per = chunkElems(s.chunkBytes, es);
  const Span whole{0, block};
  const size_t chunks = numChunks(whole, per);
  std::vector<std::vector<uint32_t>> last(n, std::vector<uint32_t>(chunks, kNoStep));
  for (int step = 0; step < n - 1; ++step) {
    int sendSeg = modRank(r - step - 1, n), recvSeg = modRank(r - step - 2, n);
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      BufRef src = step == 0 ? at(kSendBuffer, sendSeg * block + c.offset)
                             : at(kScratchBuffer, sendSeg * block + c.offset);
      sch.add(sendStep(next, src, c.count * es), depsOf(last[sendSeg][j]));
    }
    const bool final = step == n - 2;  // recvSeg == r: the result lands in the receive buffer
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      BufRef dst =
          final ? at(kRecvBuffer, c.offset) : at(kScratchBuffer, recvSeg * block + c.offset);
      last[recvSeg][j] = sch.add(
          recvReduceStep(prev, dst, at(kSendBuffer, recvSeg * block + c.offset), c.count * es));
    }
  }
  if (s.op == bcclAvg) {
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      sch.add(scaleStep(at(kRecvBuffer, c.offset), at(kRecvBuffer, c.offset), c.count * es),
              depsOf(last[r][j]));
    }
  }
  return sch;
}

}  // namespace bccl
