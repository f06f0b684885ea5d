// Recursive doubling and halving. The ring's latency grows with nranks (2(n-1) hops for
// allreduce); these take log2(n) rounds, exchanging with a partner at distance 2^k. Recursive
// doubling ("rd") sends the whole buffer every round: best for small messages. Halving then
// doubling ("rhd", Rabenseifner) sends half, a quarter, ... then the same back: log-latency with
// the ring's bandwidth. Non-power-of-two nranks fold the extra ranks in and out (see Fold).
//
// Floats: in rd the two partners of a round combine the same two partial results in opposite
// orders (a + b on one, b + a on the other); IEEE sum/prod/min/max are commutative, so every rank
// still ends with the same bits, but the association differs from the ring's, so rd and ring
// may differ from each other in the last bits (as NCCL's tree and ring do). In rhd each element
// is reduced on one rank and then copied, so all ranks agree bit for bit too.
#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "algorithms/builders_extra.h"
#include "algorithms/partition.h"

namespace bccl {
namespace {

// The power-of-two set of ranks that exchange. With n = p + rem, ranks 0..2*rem-1 pair up: the
// even one of a pair hands its data to the odd one, sits out, and gets the result back; the odd
// ones and ranks >= 2*rem are participants 0..p-1, in rank order.
struct Fold {
  int p = 1, rem = 0, rounds = 0;
  int v = -1;        // this rank's participant index, -1 if it sits out
  int partner = -1;  // the other rank of its pair, -1 if unpaired
  int rankOf(int participant) const {
    return participant < rem ? 2 * participant + 1 : participant + rem;
  }
  // First element of participant v's blocks when rank i owns block i of `count` elements.
  size_t blockStart(int participant, size_t count) const {
    return static_cast<size_t>(participant < rem ? 2 * participant : participant + rem) * count;
  }
};

Fold foldFor(int r, int n) {
  Fold f;
  while (f.p * 2 <= n) {
    f.p *= 2;
    ++f.rounds;
  }
  f.rem = n - f.p;
  if (r < 2 * f.rem) {
    f.partner = r ^ 1;
    if (r % 2 == 1) f.v = r / 2;
  } else {
    f.v = r - f.rem;
  }
  return f;
}

// The step that last wrote (or read) each element range. Halving and doubling cut the data at
// different places from round to round; a step must wait for exactly the steps that touched the
// elements it uses, whatever their boundaries.
class RangeSteps {
 public:
  std::vector<uint32_t> overlapping(size_t begin, size_t end) const {
    std::vector<uint32_t> out;
    auto it = byBegin_.upper_bound(begin);
    if (it != byBegin_.begin()) --it;
    for (; it != byBegin_.end() && it->first < end; ++it)
      if (it->second.first > begin) out.push_back(it->second.second);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }
  // `step` becomes the latest over [begin, end), replacing what it covers.
  void record(size_t begin, size_t end, uint32_t step) {
    auto it = byBegin_.upper_bound(begin);
    if (it != byBegin_.begin()) --it;
    while (it != byBegin_.end() && it->first < end) {
      const size_t b = it->first, e = it->second.first;
      const uint32_t id = it->second.second;
      if (e <= begin) {
        ++it;
        continue;
      }
      it = byBegin_.erase(it);
      if (b < begin) byBegin_.emplace(b, std::make_pair(begin, id));
      if (e > end) byBegin_.emplace(end, std::make_pair(e, id));
    }
    byBegin_[begin] = {end, step};
  }

 private:
  std::map<size_t, std::pair<size_t, uint32_t>> byBegin_;  // begin -> (end, step)
};

// Elements [begin, end) cut into pipelining chunks; both ends of a message cut it the same way.
template <typename F>
void forPieces(size_t begin, size_t end, size_t per, F&& f) {
  const Span whole{begin, end - begin};
  for (size_t j = 0; j < numChunks(whole, per); ++j) f(chunkOf(whole, per, j));
}

std::vector<uint32_t> plus(std::vector<uint32_t> a, const std::vector<uint32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The paired even rank of an allreduce: its data goes to the partner, the result comes back.
void sitOutAllReduce(Schedule& sch, const CollectiveShape& s, int partner, size_t per) {
  const size_t es = sch.elemSize;
  std::vector<uint32_t> sent;
  forPieces(0, s.count, per, [&](Span c) {
    sent.push_back(sch.add(sendStep(partner, BufRef{kSendBuffer, c.offset * es}, c.count * es)));
  });
  size_t j = 0;
  // In place, the result lands where the data being sent still is.
  forPieces(0, s.count, per, [&](Span c) {
    sch.add(recvStep(partner, BufRef{kRecvBuffer, c.offset * es}, c.count * es), {sent[j++]});
  });
}

bool copyOnly(Schedule& sch, const CollectiveShape& s, size_t elems) {
  if (s.nranks != 1) return false;
  if (!s.inPlace && elems > 0)
    sch.add(copyStep(BufRef{kRecvBuffer, 0}, BufRef{kSendBuffer, 0}, elems * sch.elemSize));
  return true;
}

}  // namespace

Schedule buildRecursiveDoublingAllReduce(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "rd");
  const size_t es = sch.elemSize;
  auto at = [es](uint16_t buf, size_t elem) { return BufRef{buf, elem * es}; };
  if (copyOnly(sch, s, s.count)) return sch;
  const Fold f = foldFor(s.rank, s.nranks);
  const size_t per = chunkElems(s.chunkBytes, es);
  if (f.v < 0) {
    sitOutAllReduce(sch, s, f.partner, per);
    return sch;
  }
  const Span whole{0, s.count};
  const size_t chunks = numChunks(whole, per);
  // Each round reduces into the other buffer than the one it sends from, so a round's send and
  // receive overlap; the buffers alternate so that the last round lands in the receive buffer.
  auto after = [&](int round) {
    return (f.rounds - 1 - round) % 2 == 0 ? kRecvBuffer : kScratchBuffer;
  };
  auto physical = [&](uint16_t buf) { return s.inPlace && buf == kSendBuffer ? kRecvBuffer : buf; };
  std::vector<uint32_t> last(chunks, kNoStep);  // the step that produced each chunk's value
  // Per buffer and chunk: sends reading it since it was last written (write-after-read guards).
  std::vector<std::vector<uint32_t>> readers[3];
  for (auto& r : readers) r.assign(chunks, {});
  auto write = [&](uint16_t buf, size_t j) {
    std::vector<uint32_t> deps = plus(depsOf(last[j]), readers[physical(buf)][j]);
    readers[physical(buf)][j].clear();
    if (buf == kScratchBuffer) sch.scratchBytes = s.count * es;
    return deps;
  };
  uint16_t cur = kSendBuffer;
  if (f.partner >= 0) {
    cur = after(-1);
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      std::vector<uint32_t> deps = write(cur, j);
      last[j] = sch.add(
          recvReduceStep(f.partner, at(cur, c.offset), at(kSendBuffer, c.offset), c.count * es),
          deps);
    }
  }
  for (int k = 0; k < f.rounds; ++k) {
    const int peer = f.rankOf(f.v ^ (1 << k));
    const uint16_t dst = after(k);
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      readers[physical(cur)][j].push_back(
          sch.add(sendStep(peer, at(cur, c.offset), c.count * es), depsOf(last[j])));
    }
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      std::vector<uint32_t> deps = write(dst, j);
      last[j] =
          sch.add(recvReduceStep(peer, at(dst, c.offset), at(cur, c.offset), c.count * es), deps);
    }
    cur = dst;
  }
  for (size_t j = 0; j < chunks; ++j) {
    Span c = chunkOf(whole, per, j);
    if (s.op == bcclAvg) {
      std::vector<uint32_t> deps = write(kRecvBuffer, j);
      last[j] = sch.add(
          scaleStep(at(kRecvBuffer, c.offset), at(kRecvBuffer, c.offset), c.count * es), deps);
    }
    if (f.partner >= 0)
      sch.add(sendStep(f.partner, at(kRecvBuffer, c.offset), c.count * es), depsOf(last[j]));
  }
  return sch;
}

Schedule buildRabenseifnerAllReduce(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "rhd");
  const size_t es = sch.elemSize;
  auto at = [es](uint16_t buf, size_t elem) { return BufRef{buf, elem * es}; };
  if (copyOnly(sch, s, s.count)) return sch;
  const Fold f = foldFor(s.rank, s.nranks);
  const size_t per = chunkElems(s.chunkBytes, es);
  if (f.v < 0) {
    sitOutAllReduce(sch, s, f.partner, per);
    return sch;
  }
  // The data is cut into p segments. Round k pairs participants differing in bit k, nearest
  // first, so the biggest halves travel between neighbouring ranks (same host, when ranks are
  // numbered host by host). Splitting by bit k first means participant v ends up owning the
  // segment at the bit-reversal of v: that is the order the segments are laid out in.
  auto start = [&](int position) {
    return position == f.p ? s.count : segmentOf(s.count, f.p, position).offset;
  };
  RangeSteps writers, readers;  // over the receive buffer, where everything is reduced
  bool reduced = false;         // whether the receive buffer already holds partial results
  if (f.partner >= 0) {
    forPieces(0, s.count, per, [&](Span c) {
      writers.record(c.offset, c.offset + c.count,
                     sch.add(recvReduceStep(f.partner, at(kRecvBuffer, c.offset),
                                            at(kSendBuffer, c.offset), c.count * es)));
    });
    reduced = true;
  }
  int lo = 0, hi = f.p;  // positions of the segments this rank still holds partial results for
  for (int k = 0; k < f.rounds; ++k) {
    const int peer = f.rankOf(f.v ^ (1 << k));
    const int mid = (lo + hi) / 2;
    const bool upper = (f.v >> k) & 1;
    const int keepLo = upper ? mid : lo, keepHi = upper ? hi : mid;
    const int giveLo = upper ? lo : mid, giveHi = upper ? mid : hi;
    const uint16_t from = reduced ? kRecvBuffer : kSendBuffer;
    forPieces(start(giveLo), start(giveHi), per, [&](Span c) {
      const size_t e = c.offset + c.count;
      readers.record(c.offset, e,
                     sch.add(sendStep(peer, at(from, c.offset), c.count * es),
                             writers.overlapping(c.offset, e)));
    });
    forPieces(start(keepLo), start(keepHi), per, [&](Span c) {
      const size_t e = c.offset + c.count;
      writers.record(
          c.offset, e,
          sch.add(recvReduceStep(peer, at(kRecvBuffer, c.offset), at(from, c.offset), c.count * es),
                  writers.overlapping(c.offset, e)));
    });
    reduced = true;
    lo = keepLo;
    hi = keepHi;
  }
  if (s.op == bcclAvg)
    forPieces(start(lo), start(hi), per, [&](Span c) {
      const size_t e = c.offset + c.count;
      writers.record(
          c.offset, e,
          sch.add(scaleStep(at(kRecvBuffer, c.offset), at(kRecvBuffer, c.offset), c.count * es),
                  writers.overlapping(c.offset, e)));
    });
  // Allgather: the same pairs in reverse, each receive landing on what that round gave away.
  for (int k = f.rounds - 1; k >= 0; --k) {
    const int peer = f.rankOf(f.v ^ (1 << k));
    const int size = hi - lo;
    const bool upper = (f.v >> k) & 1;
    const int theirLo = upper ? lo - size : hi;
    forPieces(start(lo), start(hi), per, [&](Span c) {
      sch.add(sendStep(peer, at(kRecvBuffer, c.offset), c.count * es),
              writers.overlapping(c.offset, c.offset + c.count));
    });
    forPieces(start(theirLo), start(theirLo + size), per, [&](Span c) {
      const size_t e = c.offset + c.count;
      writers.record(c.offset, e,
                     sch.add(recvStep(peer, at(kRecvBuffer, c.offset), c.count * es),
                             readers.overlapping(c.offset, e)));
    });
    lo = std::min(lo, theirLo);
    hi = lo + 2 * size;
  }
  if (f.partner >= 0)
    forPieces(0, s.count, per, [&](Span c) {
      sch.add(sendStep(f.partner, at(kRecvBuffer, c.offset), c.count * es),
              writers.overlapping(c.offset, c.offset + c.count));
    });
  return sch;
}

Schedule buildRecursiveHalvingReduceScatter(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "rhd");
  const size_t es = sch.elemSize;
  auto at = [es](uint16_t buf, size_t elem) { return BufRef{buf, elem * es}; };
  if (copyOnly(sch, s, s.count)) return sch;
  const int r = s.rank, n = s.nranks;
  const Fold f = foldFor(r, n);
  const size_t per = chunkElems(s.chunkBytes, es), k = s.count, total = n * k;
  const size_t mine = r * k;  // my block in the send buffer's element space
  if (f.v < 0) {
    RangeSteps sent;
    forPieces(0, total, per, [&](Span c) {
      sent.record(c.offset, c.offset + c.count,
                  sch.add(sendStep(f.partner, at(kSendBuffer, c.offset), c.count * es)));
    });
    // In place, my receive buffer is my block of the send buffer: wait for it to be sent.
    forPieces(mine, mine + k, per, [&](Span c) {
      sch.add(recvStep(f.partner, at(kRecvBuffer, c.offset - mine), c.count * es),
              sent.overlapping(c.offset, c.offset + c.count));
    });
    return sch;
  }
  // Partial sums live in scratch, indexed like the send buffer. Halving splits participants by
  // their top bit first, so each keeps a contiguous run of ranks' blocks and ends with its own.
  sch.scratchBytes = total * es;
  RangeSteps writers;
  bool reduced = false;
  if (f.partner >= 0) {
    forPieces(0, total, per, [&](Span c) {
      writers.record(c.offset, c.offset + c.count,
                     sch.add(recvReduceStep(f.partner, at(kScratchBuffer, c.offset),
                                            at(kSendBuffer, c.offset), c.count * es)));
    });
    reduced = true;
  }
  int lo = 0, hi = f.p;
  for (int k2 = f.rounds - 1; k2 >= 0; --k2) {
    const int peer = f.rankOf(f.v ^ (1 << k2));
    const int mid = (lo + hi) / 2;
    const bool upper = (f.v >> k2) & 1;
    const int keepLo = upper ? mid : lo, keepHi = upper ? hi : mid;
    const int giveLo = upper ? lo : mid, giveHi = upper ? mid : hi;
    const uint16_t from = reduced ? kScratchBuffer : kSendBuffer;
    forPieces(f.blockStart(giveLo, k), f.blockStart(giveHi, k), per, [&](Span c) {
      sch.add(sendStep(peer, at(from, c.offset), c.count * es),
              writers.overlapping(c.offset, c.offset + c.count));
    });
    forPieces(f.blockStart(keepLo, k), f.blockStart(keepHi, k), per, [&](Span c) {
      const size_t e = c.offset + c.count;
      writers.record(c.offset, e,
                     sch.add(recvReduceStep(peer, at(kScratchBuffer, c.offset), at(from, c.offset),
                                            c.count * es),
                             writers.overlapping(c.offset, e)));
    });
    reduced = true;
    lo = keepLo;
    hi = keepHi;
  }
  // Averaging divides while moving the result out of scratch: still once per element.
  forPieces(mine, mine + k, per, [&](Span c) {
    const BufRef dst = at(kRecvBuffer, c.offset - mine), src = at(kScratchBuffer, c.offset);
    sch.add(s.op == bcclAvg ? scaleStep(dst, src, c.count * es) : copyStep(dst, src, c.count * es),
            writers.overlapping(c.offset, c.offset + c.count));
  });
  if (f.partner >= 0) {
    const size_t theirs = static_cast<size_t>(f.partner) * k;
    forPieces(theirs, theirs + k, per, [&](Span c) {
      const size_t e = c.offset + c.count;
      if (s.op == bcclAvg)
        writers.record(c.offset, e,
                       sch.add(scaleStep(at(kScratchBuffer, c.offset), at(kScratchBuffer, c.offset),
                                         c.count * es),
                               writers.overlapping(c.offset, e)));
      sch.add(sendStep(f.partner, at(kScratchBuffer, c.offset), c.count * es),
              writers.overlapping(c.offset, e));
    });
  }
  return sch;
}

Schedule buildRecursiveDoublingAllGather(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "rd");
  const size_t es = sch.elemSize;
  auto at = [es](uint16_t buf, size_t elem) { return BufRef{buf, elem * es}; };
  if (copyOnly(sch, s, s.count)) return sch;
  const int r = s.rank, n = s.nranks;
  const Fold f = foldFor(r, n);
  const size_t per = chunkElems(s.chunkBytes, es), k = s.count, total = n * k;
  const size_t mine = r * k;  // my block in the receive buffer
  RangeSteps writers;
  // Sends of my own block read the send buffer, so they need not wait for this copy.
  if (!s.inPlace && k > 0)
    writers.record(mine, mine + k,
                   sch.add(copyStep(at(kRecvBuffer, mine), at(kSendBuffer, 0), k * es)));
  if (f.v < 0) {
    forPieces(mine, mine + k, per, [&](Span c) {
      sch.add(sendStep(f.partner, at(kSendBuffer, c.offset - mine), c.count * es));
    });
    forPieces(0, mine, per, [&](Span c) {
      sch.add(recvStep(f.partner, at(kRecvBuffer, c.offset), c.count * es));
    });
    forPieces(mine + k, total, per, [&](Span c) {
      sch.add(recvStep(f.partner, at(kRecvBuffer, c.offset), c.count * es));
    });
    return sch;
  }
  if (f.partner >= 0) {
    const size_t theirs = static_cast<size_t>(f.partner) * k;
    forPieces(theirs, theirs + k, per, [&](Span c) {
      writers.record(c.offset, c.offset + c.count,
                     sch.add(recvStep(f.partner, at(kRecvBuffer, c.offset), c.count * es)));
    });
  }
  // Nearest partner first: a participant's blocks stay one contiguous run of ranks.
  int lo = f.v, hi = f.v + 1;
  for (int b = 0; b < f.rounds; ++b) {
    const int peer = f.rankOf(f.v ^ (1 << b));
    const int size = hi - lo;
    const int theirLo = (f.v >> b) & 1 ? lo - size : hi;
    forPieces(f.blockStart(lo, k), f.blockStart(hi, k), per, [&](Span c) {
      const bool own = c.offset >= mine && c.offset + c.count <= mine + k;
      if (own)
        sch.add(sendStep(peer, at(kSendBuffer, c.offset - mine), c.count * es));
      else
        sch.add(sendStep(peer, at(kRecvBuffer, c.offset), c.count * es),
                writers.overlapping(c.offset, c.offset + c.count));
    });
    forPieces(f.blockStart(theirLo, k), f.blockStart(theirLo + size, k), per, [&](Span c) {
      writers.record(c.offset, c.offset + c.count,
                     sch.add(recvStep(peer, at(kRecvBuffer, c.offset), c.count * es)));
    });
    lo = std::min(lo, theirLo);
    hi = lo + 2 * size;
  }
  if (f.partner >= 0) {
    const size_t theirs = static_cast<size_t>(f.partner) * k;
    auto give = [&](Span c) {
      sch.add(sendStep(f.partner, at(kRecvBuffer, c.offset), c.count * es),
              writers.overlapping(c.offset, c.offset + c.count));
    };
    forPieces(0, theirs, per, give);
    forPieces(theirs + k, total, per, give);
  }
  return sch;
}

}  // namespace bccl
