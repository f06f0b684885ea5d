// Pipelined ring algorithms (allreduce, allgather, reduce-scatter): bandwidth-optimal, each
// rank sends and receives 2(n-1)/n (or (n-1)/n) of the data, one chunk at a time so that the
// next hop starts before the previous finishes.
#include <algorithm>
#include <climits>
#include <vector>

#include "algorithms/builders.h"
#include "algorithms/partition.h"

namespace bccl {
namespace {

// Chunk offsets per window for a buffer of `chunks` of them (see below); 0 in the shape means
// a single window, the whole-segment pipeline.
size_t windowOf(const CollectiveShape& s, size_t chunks) {
  return s.ringWindow > 0 ? s.ringWindow : std::max<size_t>(1, chunks);
}

}  // namespace

// Among ranks that share memory (shape.ringWindow, from ringWindowChunks), chunks travel the
// ring in windows of a few chunk offsets: each window makes its whole trip (n - 1 reduce steps,
// n - 1 gather steps) before the next starts, like NCCL's loop over slices of nranks chunks. A
// chunk reduced at one step is then forwarded at the next while it is still in cache; a
// whole-segment pipeline forwards it a segment later, from memory (one host, 4 and 8 ranks: up
// to 1.4x slower at 32 MiB; within noise at 256 MiB). Over network links (ringWindow 0) the
// whole-segment pipeline stays: it keeps more independent sends queued.
Schedule buildRingAllReduce(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "ring");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  if (n == 1) {
    addSingleRankCopy(&sch, s);
    return sch;
  }
  // Segments are named by the rank that owns them; steps walk the ring by position.
  const RingPositions ring(s);
  const int next = ring.next(), prev = ring.prev(), p = ring.me();
  const size_t per = chunkElems(s.chunkBytes, es);
  const size_t chunks = numChunks(segmentOf(s.count, n, 0), per);  // segment 0 is the largest
  const size_t window = windowOf(s, chunks);
  auto chunk = [&](int seg, size_t j, Span* c) {
    const Span whole = segmentOf(s.count, n, seg);
    if (j >= numChunks(whole, per)) return false;
    *c = chunkOf(whole, per, j);
    return true;
  };
  // last[j - first][seg]: the step that last wrote chunk j of that segment in the receive buffer.
  std::vector<std::vector<uint32_t>> last;
  std::vector<uint32_t> firstSend;  // my own chunk j, sent straight from the send buffer
  for (size_t first = 0; first < chunks; first += window) {
    const size_t end = std::min(chunks, first + window);
    last.assign(end - first, std::vector<uint32_t>(n, kNoStep));
    firstSend.assign(end - first, kNoStep);
    Span c;
    for (int step = 0; step < n - 1; ++step) {
      const int sendSeg = ring.at(p - step), recvSeg = ring.at(p - step - 1L);
      for (size_t j = first; j < end; ++j) {
        std::vector<uint32_t>& lj = last[j - first];
        if (chunk(sendSeg, j, &c)) {
          const uint16_t from = step == 0 ? kSendBuffer : kRecvBuffer;
          const uint32_t id =
              sch.add(sendStep(next, sch.at(from, c.offset), c.count * es), depsOf(lj[sendSeg]));
          if (step == 0) firstSend[j - first] = id;
        }
        if (chunk(recvSeg, j, &c))
          lj[recvSeg] = sch.add(recvReduceStep(prev, sch.at(kRecvBuffer, c.offset),
                                               sch.at(kSendBuffer, c.offset), c.count * es));
      }
    }
    const int owned = ring.at(p + 1L);
    for (size_t j = first; j < end && s.op == bcclAvg; ++j)
      if (chunk(owned, j, &c))
        last[j - first][owned] = sch.add(
            scaleStep(sch.at(kRecvBuffer, c.offset), sch.at(kRecvBuffer, c.offset), c.count * es),
            depsOf(last[j - first][owned]));
    for (int step = 0; step < n - 1; ++step) {
      const int sendSeg = ring.at(p + 1L - step), recvSeg = ring.at(p - step);
      for (size_t j = first; j < end; ++j) {
        std::vector<uint32_t>& lj = last[j - first];
        if (chunk(sendSeg, j, &c))
          sch.add(sendStep(next, sch.at(kRecvBuffer, c.offset), c.count * es), depsOf(lj[sendSeg]));
        if (chunk(recvSeg, j, &c)) {
          // In place, my own chunk's first send reads the memory this receive overwrites.
          const uint32_t guard = recvSeg == r ? firstSend[j - first] : kNoStep;
          lj[recvSeg] =
              sch.add(recvStep(prev, sch.at(kRecvBuffer, c.offset), c.count * es), depsOf(guard));
        }
      }
    }
  }
  return sch;
}

Schedule buildRingAllGather(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "ring");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  const size_t block = s.count;
  if (n == 1) {
    if (!s.inPlace && block > 0)
      sch.add(copyStep(sch.at(kRecvBuffer, 0), sch.at(kSendBuffer, 0), block * es));
    return sch;
  }
  const RingPositions ring(s);
  const int next = ring.next(), prev = ring.prev(), p = ring.me();
  const size_t per = chunkElems(s.chunkBytes, es);
  const Span whole{0, block};
  const size_t chunks = numChunks(whole, per);
  std::vector<std::vector<uint32_t>> last(n, std::vector<uint32_t>(chunks, kNoStep));
  // In windows of chunk offsets, as the allreduce above: a block received is forwarded a
  // window later, from cache, not a whole block later.
  const size_t window = windowOf(s, chunks);
  for (size_t first = 0; first < chunks; first += window) {
    const size_t end = std::min(chunks, first + window);
    for (int step = 0; step < n - 1; ++step) {
      const int sendSeg = ring.at(p - step), recvSeg = ring.at(p - step - 1L);
      for (size_t j = first; j < end; ++j) {
        Span c = chunkOf(whole, per, j);
        // My own block goes out straight from the send buffer, not waiting for the local copy.
        BufRef src = step == 0 ? sch.at(kSendBuffer, c.offset)
                               : sch.at(kRecvBuffer, sendSeg * block + c.offset);
        uint32_t id = sch.add(sendStep(next, src, c.count * es), depsOf(last[sendSeg][j]));
        // Out of place, my own block is copied a chunk at a time right after that chunk went
        // out: the copy reads it from cache, and fills the time spent waiting for the ring.
        if (step == 0 && !s.inPlace)
          sch.add(copyStep(sch.at(kRecvBuffer, r * block + c.offset), sch.at(kSendBuffer, c.offset),
                           c.count * es),
                  depsOf(id));
      }
      for (size_t j = first; j < end; ++j) {
        Span c = chunkOf(whole, per, j);
        last[recvSeg][j] =
            sch.add(recvStep(prev, sch.at(kRecvBuffer, recvSeg * block + c.offset), c.count * es));
      }
    }
  }
  return sch;
}

Schedule buildRingReduceScatter(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "ring");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  const size_t block = s.count;
  if (n == 1) {
    if (!s.inPlace && block > 0)
      sch.add(copyStep(sch.at(kRecvBuffer, 0), sch.at(kSendBuffer, 0), block * es));
    return sch;
  }
  sch.scratchBytes = static_cast<size_t>(n) * block * es;
  const RingPositions ring(s);
  const int next = ring.next(), prev = ring.prev(), p = ring.me();
  const size_t per = chunkElems(s.chunkBytes, es);
  const Span whole{0, block};
  const size_t chunks = numChunks(whole, per);
  std::vector<std::vector<uint32_t>> last(n, std::vector<uint32_t>(chunks, kNoStep));
  // In windows of chunk offsets, as the allreduce above.
  const size_t window = windowOf(s, chunks);
  for (size_t first = 0; first < chunks; first += window)
    for (int step = 0; step < n - 1; ++step)
      for (size_t j = first; j < std::min(chunks, first + window); ++j) {
        const int sendSeg = ring.at(p - step - 1L), recvSeg = ring.at(p - step - 2L);
        Span c = chunkOf(whole, per, j);
        BufRef src = step == 0 ? sch.at(kSendBuffer, sendSeg * block + c.offset)
                               : sch.at(kScratchBuffer, sendSeg * block + c.offset);
        sch.add(sendStep(next, src, c.count * es), depsOf(last[sendSeg][j]));
        const bool final = step == n - 2;  // recvSeg == r: the result lands in the receive buffer
        BufRef dst = final ? sch.at(kRecvBuffer, c.offset)
                           : sch.at(kScratchBuffer, recvSeg * block + c.offset);
        last[recvSeg][j] = sch.add(recvReduceStep(
            prev, dst, sch.at(kSendBuffer, recvSeg * block + c.offset), c.count * es));
      }
  if (s.op == bcclAvg) {
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      sch.add(scaleStep(sch.at(kRecvBuffer, c.offset), sch.at(kRecvBuffer, c.offset), c.count * es),
              depsOf(last[r][j]));
    }
  }
  return sch;
}

// Built for this rank's place in the ring order, then every peer renamed to the rank there.
Schedule buildInRingOrder(Schedule (*build)(const CollectiveShape&), CollectiveShape shape) {
  if (shape.ringOrder.size() != static_cast<size_t>(shape.nranks)) return build(shape);
  const int place = RingPositions(shape).me();
  const std::vector<int> order = std::move(shape.ringOrder);
  shape.ringOrder.clear();
  shape.rank = place;
  Schedule sch = build(shape);
  sch.rank = order[static_cast<size_t>(sch.rank)];
  for (Step& st : sch.steps)
    if (st.peer >= 0) st.peer = order[static_cast<size_t>(st.peer)];
  return sch;
}

}  // namespace bccl
