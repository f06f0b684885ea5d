// Bruck allgather: ceil(log2 n) rounds for any n (recursive doubling needs a power of two or an
// extra fold round trip, the ring needs n-1). In round k every rank sends what it has gathered to
// the rank 2^k below and receives as much from the rank 2^k above, so blocks arrive rotated by
// the rank: they are gathered in scratch and copied into rank order as each piece arrives.
#include <algorithm>
#include <vector>

#include "algorithms/builders_extra.h"
#include "algorithms/partition.h"

namespace bccl {
namespace {

// Scratch is written in increasing order (position 0, then each round's new positions), so a
// sorted log finds the steps that wrote a range by binary search.
struct Written {
  size_t begin, end;
  uint32_t step;
};

std::vector<uint32_t> writersOf(const std::vector<Written>& log, size_t begin, size_t end) {
  auto it = std::lower_bound(log.begin(), log.end(), begin,
                             [](const Written& w, size_t b) { return w.end <= b; });
  std::vector<uint32_t> out;
  for (; it != log.end() && it->begin < end; ++it) out.push_back(it->step);
  return out;
}

}  // namespace

Schedule buildBruckAllGather(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "bruck");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  const size_t k = s.count, total = n * k, mine = r * k;
  if (!s.inPlace && k > 0)
    sch.add(copyStep(sch.at(kRecvBuffer, mine), sch.at(kSendBuffer, 0), k * es));
  if (n == 1 || k == 0) return sch;
  const size_t per = chunkElems(s.chunkBytes, es);
  // Scratch position i (elements [i*k, (i+1)*k)) holds rank (r + i) % n's block; position 0 is
  // needed there only once a round sends more than my own block.
  sch.scratchBytes = total * es;
  std::vector<Written> log;
  if (n >= 3)
    log.push_back(
        {0, k, sch.add(copyStep(sch.at(kScratchBuffer, 0), sch.at(kSendBuffer, 0), k * es))});
  const size_t wrap = total - mine;  // scratch elements from here on belong before my block
  for (int d = 1; d < n; d *= 2) {
    const size_t m = static_cast<size_t>(std::min(d, n - d));
    const int to = modRank(r - d, n), from = modRank(r + d, n);
    const Span out{0, m * k};
    for (size_t j = 0; j < numChunks(out, per); ++j) {
      const Span c = chunkOf(out, per, j);
      // The first round sends only my block: straight from the send buffer.
      if (d == 1)
        sch.add(sendStep(to, sch.at(kSendBuffer, c.offset), c.count * es));
      else
        sch.add(sendStep(to, sch.at(kScratchBuffer, c.offset), c.count * es),
                writersOf(log, c.offset, c.offset + c.count));
    }
    const Span in{d * k, m * k};
    for (size_t j = 0; j < numChunks(in, per); ++j) {
      const Span c = chunkOf(in, per, j);
      const size_t end = c.offset + c.count;
      const uint32_t got = sch.add(recvStep(from, sch.at(kScratchBuffer, c.offset), c.count * es));
      log.push_back({c.offset, end, got});
      // The rotation: position element e is element (mine + e) mod total of the result.
      if (c.offset < wrap) {
        const size_t upto = std::min(end, wrap);
        sch.add(copyStep(sch.at(kRecvBuffer, mine + c.offset), sch.at(kScratchBuffer, c.offset),
                         (upto - c.offset) * es),
                {got});
      }
      if (end > wrap) {
        const size_t first = std::max(c.offset, wrap);
        sch.add(copyStep(sch.at(kRecvBuffer, first - wrap), sch.at(kScratchBuffer, first),
                         (end - first) * es),
                {got});
      }
    }
  }
  return sch;
}

}  // namespace bccl
