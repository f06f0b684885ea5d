// Recursive doubling and halving. The ring's latency grows with nranks (2(n-1) hops for
// allreduce); these take log2(n) rounds, exchanging with a partner at distance 2^k. Recursive
// doubling ("rd") sends the whole buffer every round: best for small messages. Halving then
// doubling ("rhd", Rabenseifner) sends half, a quarter, ... then the same back: log-latency with
// the ring's bandwidth. Non-power-of-two nranks fold the extra ranks in and out (see Fold).
//
// Floats: in rd the two partners of a round combine the same two partial results in opposite
// orders (a + b on one, b + a on the other). Sum and product are commutative in IEEE arithmetic,
// so all ranks still end with the same bits; min and max return their second operand on ties,
// so ranks may disagree on the sign of a zero result (and on NaN payloads). Either way the
// association differs from the ring's, so rd and ring results may differ in the last bits (as
// NCCL's tree and ring do). In rhd each element is reduced on one rank and then copied: all
// ranks agree bit for bit. Integer results are exact everywhere.
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

// Emits one step per pipelining chunk ("piece") of an element range, each waiting for the
// steps that last wrote the piece's elements, and a writing step also for the steps that read
// them (in every use below, a range written after being read was read only once, so keeping
// the latest reader is enough). Element offsets index one space shared by the buffers a
// builder uses; tracking them together only adds dependencies.
class Tracker {
 public:
  Tracker(Schedule& sch, size_t per) : sch_(sch), per_(per) {}
  template <typename Make>
  void reads(size_t begin, size_t end, Make make) {
    each(begin, end, make, false);
  }
  template <typename Make>
  void writes(size_t begin, size_t end, Make make) {
    each(begin, end, make, true);
  }

 private:
  template <typename Make>
  void each(size_t begin, size_t end, Make make, bool write) {
    // Both ends of a message cut its range the same way.
    const Span whole{begin, end - begin};
    for (size_t j = 0; j < numChunks(whole, per_); ++j) {
      const Span c = chunkOf(whole, per_, j);
      const size_t e = c.offset + c.count;
      std::vector<uint32_t> deps = writers_.overlapping(c.offset, e);
      if (write) {
        std::vector<uint32_t> war = readers_.overlapping(c.offset, e);
        deps.insert(deps.end(), war.begin(), war.end());
      }
      (write ? writers_ : readers_).record(c.offset, e, sch_.add(make(c), deps));
    }
  }

  Schedule& sch_;
  size_t per_;
  RangeSteps writers_, readers_;
};

std::vector<uint32_t> plus(std::vector<uint32_t> a, const std::vector<uint32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The paired even rank of an allreduce or reduce-scatter: all its data goes to the partner,
// its result (elements [begin, begin + count)) comes back. In place, the result lands on data
// being sent.
void sitOut(Schedule& sch, const CollectiveShape& s, int partner, size_t total, size_t begin) {
  const size_t es = sch.elemSize;
  Tracker t(sch, chunkElems(s.chunkBytes, es));
  t.reads(0, total,
          [&](Span c) { return sendStep(partner, sch.at(kSendBuffer, c.offset), c.count * es); });
  t.writes(begin, begin + s.count, [&](Span c) {
    return recvStep(partner, sch.at(kRecvBuffer, c.offset - begin), c.count * es);
  });
}

// One rank alone: the schedule is the copy to the output, if any.
bool copyOnly(Schedule& sch, const CollectiveShape& s) {
  if (s.nranks != 1) return false;
  addSingleRankCopy(&sch, s);
  return true;
}

}  // namespace

Schedule buildRecursiveDoublingAllReduce(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "rd");
  const size_t es = sch.elemSize;
  if (copyOnly(sch, s)) return sch;
  const Fold f = foldFor(s.rank, s.nranks);
  const size_t per = chunkElems(s.chunkBytes, es);
  if (f.v < 0) {
    sitOut(sch, s, f.partner, s.count, 0);
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
  if (f.partner < 0 && s.inPlace && after(0) == kRecvBuffer) {
    // In place, round 0 would reduce into the buffer its send reads, and the receive would
    // have to wait for the send to complete; a transport that completes a send only once the
    // peer received it (shm reads large messages from the sender's buffer) would deadlock the
    // two partners. Send from a copy instead.
    cur = kScratchBuffer;
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      std::vector<uint32_t> deps = write(cur, j);
      last[j] = sch.add(
          copyStep(sch.at(cur, c.offset), sch.at(kSendBuffer, c.offset), c.count * es), deps);
    }
  }
  if (f.partner >= 0) {
    cur = after(-1);
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      std::vector<uint32_t> deps = write(cur, j);
      last[j] = sch.add(recvReduceStep(f.partner, sch.at(cur, c.offset),
                                       sch.at(kSendBuffer, c.offset), c.count * es),
                        deps);
    }
  }
  for (int k = 0; k < f.rounds; ++k) {
    const int peer = f.rankOf(f.v ^ (1 << k));
    const uint16_t dst = after(k);
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      readers[physical(cur)][j].push_back(
          sch.add(sendStep(peer, sch.at(cur, c.offset), c.count * es), depsOf(last[j])));
    }
    for (size_t j = 0; j < chunks; ++j) {
      Span c = chunkOf(whole, per, j);
      std::vector<uint32_t> deps = write(dst, j);
      last[j] = sch.add(
          recvReduceStep(peer, sch.at(dst, c.offset), sch.at(cur, c.offset), c.count * es), deps);
    }
    cur = dst;
  }
  for (size_t j = 0; j < chunks; ++j) {
    Span c = chunkOf(whole, per, j);
    if (s.op == bcclAvg) {
      std::vector<uint32_t> deps = write(kRecvBuffer, j);
      last[j] = sch.add(
          scaleStep(sch.at(kRecvBuffer, c.offset), sch.at(kRecvBuffer, c.offset), c.count * es),
          deps);
    }
    if (f.partner >= 0)
      sch.add(sendStep(f.partner, sch.at(kRecvBuffer, c.offset), c.count * es), depsOf(last[j]));
  }
  return sch;
}

Schedule buildRabenseifnerAllReduce(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "rhd");
  const size_t es = sch.elemSize;
  if (copyOnly(sch, s)) return sch;
  const Fold f = foldFor(s.rank, s.nranks);
  if (f.v < 0) {
    sitOut(sch, s, f.partner, s.count, 0);
    return sch;
  }
  // The data is cut into p segments. Round k pairs participants differing in bit k, nearest
  // first, so the biggest halves travel between neighbouring ranks (same host, when ranks are
  // numbered host by host). Splitting by bit k first means participant v ends up owning the
  // segment at the bit-reversal of v: that is the order the segments are laid out in.
  auto start = [&](int position) {
    return position == f.p ? s.count : segmentOf(s.count, f.p, position).offset;
  };
  Tracker t(sch, chunkElems(s.chunkBytes, es));  // everything is reduced in the receive buffer
  uint16_t from = kSendBuffer;                   // where the partial results are
  if (f.partner >= 0) {
    t.writes(0, s.count, [&](Span c) {
      return recvReduceStep(f.partner, sch.at(kRecvBuffer, c.offset), sch.at(kSendBuffer, c.offset),
                            c.count * es);
    });
    from = kRecvBuffer;
  }
  int lo = 0, hi = f.p;  // positions of the segments this rank holds partial results for
  for (int k = 0; k < f.rounds; ++k) {
    const int peer = f.rankOf(f.v ^ (1 << k)), mid = (lo + hi) / 2;
    const bool upper = (f.v >> k) & 1;
    t.reads(start(upper ? lo : mid), start(upper ? mid : hi),
            [&](Span c) { return sendStep(peer, sch.at(from, c.offset), c.count * es); });
    if (upper)
      lo = mid;
    else
      hi = mid;
    t.writes(start(lo), start(hi), [&](Span c) {
      return recvReduceStep(peer, sch.at(kRecvBuffer, c.offset), sch.at(from, c.offset),
                            c.count * es);
    });
    from = kRecvBuffer;
  }
  if (s.op == bcclAvg)
    t.writes(start(lo), start(hi), [&](Span c) {
      return scaleStep(sch.at(kRecvBuffer, c.offset), sch.at(kRecvBuffer, c.offset), c.count * es);
    });
  // Allgather: the same pairs in reverse, each receive landing on what that round gave away.
  for (int k = f.rounds - 1; k >= 0; --k) {
    const int peer = f.rankOf(f.v ^ (1 << k)), size = hi - lo;
    const int theirs = (f.v >> k) & 1 ? lo - size : hi;
    t.reads(start(lo), start(hi),
            [&](Span c) { return sendStep(peer, sch.at(kRecvBuffer, c.offset), c.count * es); });
    t.writes(start(theirs), start(theirs + size),
             [&](Span c) { return recvStep(peer, sch.at(kRecvBuffer, c.offset), c.count * es); });
    lo = std::min(lo, theirs);
    hi = lo + 2 * size;
  }
  if (f.partner >= 0)
    t.reads(0, s.count, [&](Span c) {
      return sendStep(f.partner, sch.at(kRecvBuffer, c.offset), c.count * es);
    });
  return sch;
}

Schedule buildRecursiveHalvingReduceScatter(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "rhd");
  const size_t es = sch.elemSize;
  if (copyOnly(sch, s)) return sch;
  const Fold f = foldFor(s.rank, s.nranks);
  const size_t k = s.count, total = s.nranks * k;
  const size_t mine = s.rank * k;  // my block, in the send buffer's element space
  if (f.v < 0) {
    sitOut(sch, s, f.partner, total, mine);
    return sch;
  }
  // Partial sums live in scratch, indexed like the send buffer. Halving splits participants by
  // their top bit first, so each keeps a contiguous run of ranks' blocks and ends with its own.
  sch.scratchBytes = total * es;
  Tracker t(sch, chunkElems(s.chunkBytes, es));
  uint16_t from = kSendBuffer;
  if (f.partner >= 0) {
    t.writes(0, total, [&](Span c) {
      return recvReduceStep(f.partner, sch.at(kScratchBuffer, c.offset),
                            sch.at(kSendBuffer, c.offset), c.count * es);
    });
    from = kScratchBuffer;
  }
  int lo = 0, hi = f.p;
  for (int b = f.rounds - 1; b >= 0; --b) {
    const int peer = f.rankOf(f.v ^ (1 << b)), mid = (lo + hi) / 2;
    const bool upper = (f.v >> b) & 1;
    t.reads(f.blockStart(upper ? lo : mid, k), f.blockStart(upper ? mid : hi, k),
            [&](Span c) { return sendStep(peer, sch.at(from, c.offset), c.count * es); });
    if (upper)
      lo = mid;
    else
      hi = mid;
    t.writes(f.blockStart(lo, k), f.blockStart(hi, k), [&](Span c) {
      return recvReduceStep(peer, sch.at(kScratchBuffer, c.offset), sch.at(from, c.offset),
                            c.count * es);
    });
    from = kScratchBuffer;
  }
  // Averaging divides while moving the result out of scratch: still once per element.
  t.reads(mine, mine + k, [&](Span c) {
    const BufRef dst = sch.at(kRecvBuffer, c.offset - mine), src = sch.at(kScratchBuffer, c.offset);
    return s.op == bcclAvg ? scaleStep(dst, src, c.count * es) : copyStep(dst, src, c.count * es);
  });
  if (f.partner >= 0) {
    const size_t theirs = static_cast<size_t>(f.partner) * k;
    if (s.op == bcclAvg)
      t.writes(theirs, theirs + k, [&](Span c) {
        return scaleStep(sch.at(kScratchBuffer, c.offset), sch.at(kScratchBuffer, c.offset),
                         c.count * es);
      });
    t.reads(theirs, theirs + k, [&](Span c) {
      return sendStep(f.partner, sch.at(kScratchBuffer, c.offset), c.count * es);
    });
  }
  return sch;
}

Schedule buildRecursiveDoublingAllGather(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "rd");
  const size_t es = sch.elemSize;
  if (copyOnly(sch, s)) return sch;
  const Fold f = foldFor(s.rank, s.nranks);
  const size_t k = s.count, total = s.nranks * k;
  const size_t mine = s.rank * k;  // my block in the receive buffer
  Tracker t(sch, chunkElems(s.chunkBytes, es));
  if (!s.inPlace)
    t.writes(mine, mine + k, [&](Span c) {
      return copyStep(sch.at(kRecvBuffer, c.offset), sch.at(kSendBuffer, c.offset - mine),
                      c.count * es);
    });
  auto send = [&](int peer) {
    return
        [&, peer](Span c) { return sendStep(peer, sch.at(kRecvBuffer, c.offset), c.count * es); };
  };
  auto recv = [&](int peer) {
    return
        [&, peer](Span c) { return recvStep(peer, sch.at(kRecvBuffer, c.offset), c.count * es); };
  };
  if (f.v < 0) {
    t.reads(mine, mine + k, send(f.partner));
    t.writes(0, mine, recv(f.partner));
    t.writes(mine + k, total, recv(f.partner));
    return sch;
  }
  const size_t theirs = f.partner >= 0 ? static_cast<size_t>(f.partner) * k : 0;
  if (f.partner >= 0) t.writes(theirs, theirs + k, recv(f.partner));
  // Nearest partner first: what a participant holds stays one contiguous run of ranks' blocks.
  int lo = f.v, hi = f.v + 1;
  for (int b = 0; b < f.rounds; ++b) {
    const int peer = f.rankOf(f.v ^ (1 << b)), size = hi - lo;
    const int other = (f.v >> b) & 1 ? lo - size : hi;
    t.reads(f.blockStart(lo, k), f.blockStart(hi, k), send(peer));
    t.writes(f.blockStart(other, k), f.blockStart(other + size, k), recv(peer));
    lo = std::min(lo, other);
    hi = lo + 2 * size;
  }
  if (f.partner >= 0) {
    t.reads(0, theirs, send(f.partner));
    t.reads(theirs + k, total, send(f.partner));
  }
  return sch;
}

}  // namespace bccl
