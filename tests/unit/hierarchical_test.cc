// The hierarchical allreduce, checked symbolically like algorithms_test.cc checks the flat
// builders: every host layout of 1..17 ranks (one host, equal hosts, uneven hosts, hosts whose
// ranks interleave, one rank per host), awkward counts, tiny chunks, in place, averaging, random
// execution orders, rendezvous sends. Also pins what makes it hierarchical: which peers and how
// many bytes cross hosts.
#include "algorithms/hierarchical.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "algorithms/partition.h"
#include "core/dtype.h"
#include "sim/rendezvous_check.h"
#include "sim/schedule_sim.h"

namespace bccl {
namespace {

using Hosts = std::vector<std::vector<int>>;
using sim::RankState;
using sim::Sym;

Hosts contiguous(const std::vector<int>& sizes) {
  Hosts h;
  int next = 0;
  for (int size : sizes) {
    h.emplace_back();
    for (int i = 0; i < size; ++i) h.back().push_back(next++);
  }
  return h;
}

// Host k holds ranks k, k + parts, ...: what BCCL_HOST_ID can give, and sizes may differ.
Hosts interleaved(int n, int parts) {
  Hosts h(parts);
  for (int r = 0; r < n; ++r) h[r % parts].push_back(r);
  return h;
}

std::vector<int> spread(int n, int parts) {
  std::vector<int> sizes;
  for (int i = 0; i < parts; ++i) sizes.push_back(static_cast<int>(segmentOf(n, parts, i).count));
  return sizes;
}

std::vector<Hosts> layoutsFor(int n) {
  std::set<Hosts> out{contiguous({n})};
  if (n % 2 == 0) out.insert(contiguous({n / 2, n / 2}));
  if (n >= 2) out.insert(contiguous(std::vector<int>(n, 1)));
  if (n >= 3) {
    out.insert(contiguous(spread(n, 3)));
    out.insert(contiguous({1, n - 1}));
    out.insert(interleaved(n, 2));
  }
  if (n >= 4) out.insert(contiguous(spread(n, 4)));
  if (n == 5) out.insert(contiguous({3, 2}));
  if (n == 7) out.insert(contiguous({1, 4, 2}));
  return {out.begin(), out.end()};
}

struct Case {
  Hosts hosts;
  size_t count;
  size_t chunkElems;
  bool inPlace;
  bcclRedOp_t op;
  int nranks() const {
    int n = 0;
    for (const auto& h : hosts) n += static_cast<int>(h.size());
    return n;
  }
};

std::string label(const Case& c) {
  std::string hosts;
  for (const auto& h : c.hosts) {
    hosts += "{";
    for (size_t i = 0; i < h.size(); ++i) hosts += (i ? "," : "") + std::to_string(h[i]);
    hosts += "}";
  }
  return "hosts=" + hosts + " count=" + std::to_string(c.count) +
         " chunk=" + std::to_string(c.chunkElems) + (c.inPlace ? " in-place" : " out-of-place") +
         " op=" + redOpName(c.op);
}

CollectiveShape shapeOf(const Case& c, int rank) {
  CollectiveShape s;
  s.rank = rank;
  s.nranks = c.nranks();
  s.count = c.count;
  s.dtype = bcclFloat32;
  s.op = c.op;
  s.inPlace = c.inPlace;
  s.chunkBytes = c.chunkElems * 4;
  return s;
}

std::vector<Schedule> buildAll(const Case& c) {
  std::vector<Schedule> all;
  for (int r = 0; r < c.nranks(); ++r)
    all.push_back(buildHierarchicalAllReduce(shapeOf(c, r), c.hosts));
  return all;
}

// Simulates `schedules` as an allreduce of `count` elements (or, with `ownSegmentOnly`, checks
// only segment r of rank r: a reduce-scatter over segments).
std::string simulate(std::vector<Schedule> schedules, size_t count, bool inPlace, bcclRedOp_t op,
                     uint64_t seed, bool ownSegmentOnly = false) {
  const int n = static_cast<int>(schedules.size());
  std::vector<RankState> ranks(n);
  for (int r = 0; r < n; ++r) {
    RankState& st = ranks[r];
    st.schedule = std::move(schedules[r]);
    st.layout.sendCount = st.layout.recvCount = count;
    st.layout.memoryCount = inPlace ? count : 2 * count;
    st.layout.recvOffset = inPlace ? 0 : count;
    st.memory.assign(st.layout.memoryCount, Sym{});
    for (size_t i = 0; i < count; ++i) st.memory[i] = sim::input(r, n, static_cast<long>(i));
  }
  std::string fault = sim::simulate(ranks, seed);
  if (!fault.empty()) return fault;
  for (int r = 0; r < n; ++r) {
    const Span only = ownSegmentOnly ? segmentOf(count, n, r) : Span{0, count};
    for (size_t i = only.offset; i < only.offset + only.count; ++i) {
      Sym want;
      want.valid = true;
      want.tag = static_cast<long>(i);
      want.counts.assign(n, 1);
      want.scaled = op == bcclAvg && n > 1 ? 1 : 0;
      const Sym& got = ranks[r].memory[ranks[r].layout.recvOffset + i];
      if (!(got == want))
        return "rank " + std::to_string(r) + " element " + std::to_string(i) + ": got " +
               sim::describe(got) + ", want " + sim::describe(want);
    }
  }
  return "";
}

std::string runCase(const Case& c, uint64_t seed = 0) {
  return simulate(buildAll(c), c.count, c.inPlace, c.op, seed);
}

TEST(Hierarchical, EveryLayoutIsExact) {
  int cases = 0;
  for (int n = 1; n <= 17; ++n)
    for (const Hosts& hosts : layoutsFor(n))
      for (size_t count : {0, 1, 2, 7, 19, 64})
        for (size_t chunk : {1, 3, 1000})
          for (bool inPlace : {false, true})
            for (bcclRedOp_t op : {bcclSum, bcclAvg}) {
              Case c{hosts, count, chunk, inPlace, op};
              ASSERT_EQ(runCase(c), "") << label(c);
              ++cases;
            }
  EXPECT_GT(cases, 17 * 3 * 72);
}

// A receive landing where a send still reads, or a phase starting on data the previous phase
// has not produced, corrupts some order.
TEST(Hierarchical, AnyExecutionOrderIsExact) {
  for (int n = 2; n <= 9; ++n)
    for (const Hosts& hosts : layoutsFor(n))
      for (size_t count : {7, 19})
        for (size_t chunk : {1, 3})
          for (bool inPlace : {false, true})
            for (uint64_t seed = 1; seed <= 3; ++seed) {
              Case c{hosts, count, chunk, inPlace, seed == 3 ? bcclAvg : bcclSum};
              ASSERT_EQ(runCase(c, seed), "") << label(c) << " seed " << seed;
            }
}

TEST(Hierarchical, NoDeadlockWhenSendsWaitForTheirReceiver) {
  for (int n = 1; n <= 17; ++n)
    for (const Hosts& hosts : layoutsFor(n))
      for (size_t count : {1, 7, 19})
        for (size_t chunk : {1, 3})
          for (bool inPlace : {false, true})
            for (bcclRedOp_t op : {bcclSum, bcclAvg}) {
              Case c{hosts, count, chunk, inPlace, op};
              ASSERT_EQ(sim::rendezvousDeadlock(buildAll(c)), "") << label(c);
            }
}

// Segments above kHierRdMaxBytes cross hosts on a ring instead of by recursive doubling: a few
// big cases so that branch is simulated too (equal hosts: rails; unequal: leaders).
TEST(Hierarchical, LargeSegmentsUseTheRingAcrossHosts) {
  const size_t big = kHierRdMaxBytes / 4 + 5;  // elements per segment, past the threshold
  for (const Hosts& hosts : {contiguous({4, 4}), contiguous({2, 2, 2}), contiguous({3, 2})})
    for (bool inPlace : {false, true}) {
      Case c{hosts, big * hosts[0].size(), 4096, inPlace, inPlace ? bcclAvg : bcclSum};
      const std::vector<Schedule> all = buildAll(c);
      ASSERT_EQ(sim::rendezvousDeadlock(all), "") << label(c);
      ASSERT_EQ(simulate(all, c.count, c.inPlace, c.op, inPlace ? 7 : 0), "") << label(c);
    }
}

// The flat segment builders on their own, since later hierarchical collectives reuse them.
TEST(Hierarchical, SegmentRingsAreExact) {
  for (int n = 1; n <= 9; ++n)
    for (size_t count : {0, 1, 7, 19})
      for (size_t chunk : {1, 3})
        for (bool inPlace : {false, true})
          for (uint64_t seed : {0, 1}) {
            const std::string what = "n=" + std::to_string(n) + " count=" + std::to_string(count) +
                                     " chunk=" + std::to_string(chunk) +
                                     (inPlace ? " in-place" : "") + " seed " + std::to_string(seed);
            std::vector<Schedule> rs, ag;
            for (int r = 0; r < n; ++r) {
              Case c{contiguous({n}), count, chunk, inPlace, seed ? bcclAvg : bcclSum};
              rs.push_back(buildRingReduceScatterSegments(shapeOf(c, r)));
            }
            ASSERT_EQ(sim::rendezvousDeadlock(rs), "") << what;
            ASSERT_EQ(simulate(rs, count, inPlace, seed ? bcclAvg : bcclSum, seed, true), "")
                << what;
            // Allgather: each rank's send buffer is its segment (in place: at its offset).
            std::vector<RankState> ranks(n);
            for (int r = 0; r < n; ++r) {
              Case c{contiguous({n}), count, chunk, inPlace, bcclSum};
              const Span mine = segmentOf(count, n, r);
              RankState& st = ranks[r];
              st.schedule = buildRingAllGatherSegments(shapeOf(c, r));
              ag.push_back(st.schedule);
              st.layout.recvCount = count;
              st.layout.sendCount = mine.count;
              st.layout.memoryCount = inPlace ? count : count + mine.count;
              st.layout.sendOffset = inPlace ? mine.offset : count;
              st.memory.assign(st.layout.memoryCount, Sym{});
              for (size_t i = 0; i < mine.count; ++i)
                st.memory[st.layout.sendOffset + i] =
                    sim::input(r, n, static_cast<long>(mine.offset + i));
            }
            ASSERT_EQ(sim::rendezvousDeadlock(ag), "") << what;
            ASSERT_EQ(sim::simulate(ranks, seed), "") << what;
            for (int r = 0; r < n; ++r)
              for (size_t i = 0; i < count; ++i) {
                int owner = 0;
                while (i >= segmentOf(count, n, owner).offset + segmentOf(count, n, owner).count)
                  ++owner;
                ASSERT_EQ(ranks[r].memory[i], sim::input(owner, n, static_cast<long>(i)))
                    << what << " rank " << r << " element " << i;
              }
          }
}

struct CrossTraffic {
  int messages = 0;
  size_t bytes = 0;
  std::set<int> peers;
};

CrossTraffic crossHost(const Schedule& s, const Hosts& hosts) {
  std::vector<int> hostOf(s.nranks);
  for (size_t h = 0; h < hosts.size(); ++h)
    for (int r : hosts[h]) hostOf[r] = static_cast<int>(h);
  CrossTraffic t;
  for (const Step& st : s.steps)
    if (st.kind == StepKind::kSend && hostOf[st.peer] != hostOf[s.rank]) {
      ++t.messages;
      t.bytes += st.bytes;
      t.peers.insert(st.peer);
    }
  return t;
}

// 8 ranks on 2 hosts: each rank sends across only to its rail peer, 2(H-1)/H of its segment
// (s/L), so a host sends s across; the flat ring's boundary rank sends 2(n-1)/n of s.
TEST(Hierarchical, OnlyRailsCrossHosts) {
  const Hosts hosts = contiguous({4, 4});
  const size_t count = 1 << 20;  // 4 MiB of floats: 1 MiB segments, ring across
  Case c{hosts, count, (1 << 18) / 4, false, bcclSum};
  size_t hierHost0 = 0, ringHost0 = 0;
  for (int r = 0; r < 8; ++r) {
    const Schedule s = buildHierarchicalAllReduce(shapeOf(c, r), hosts);
    EXPECT_EQ(s.algorithm, "hier");
    const CrossTraffic t = crossHost(s, hosts);
    EXPECT_EQ(t.peers, (std::set<int>{(r + 4) % 8})) << r;
    EXPECT_EQ(t.bytes, count) << r;     // the 1 MiB segment: half out, the reduced half back
    EXPECT_EQ(t.messages, 2 * 2) << r;  // 2(H-1) ring steps x two 256 KiB chunks of 512 KiB
    if (r < 4) {
      hierHost0 += t.bytes;
      ringHost0 += crossHost(buildRingAllReduce(shapeOf(c, r)), hosts).bytes;
    }
  }
  EXPECT_EQ(hierHost0, count * 4);
  EXPECT_EQ(ringHost0, 2 * 7 * count * 4 / 8);
  // Small segments: one recursive-doubling exchange across.
  Case small{hosts, 64, 1000, false, bcclSum};
  for (int r = 0; r < 8; ++r)
    EXPECT_EQ(crossHost(buildHierarchicalAllReduce(shapeOf(small, r), hosts), hosts).messages, 1);
}

TEST(Hierarchical, UnequalHostsCrossOnlyBetweenLeaders) {
  const Hosts hosts = contiguous({1, 4, 2});
  Case c{hosts, 19, 3, false, bcclSum};
  for (int r = 0; r < 7; ++r) {
    const CrossTraffic t = crossHost(buildHierarchicalAllReduce(shapeOf(c, r), hosts), hosts);
    const bool leader = r == 0 || r == 1 || r == 5;
    EXPECT_EQ(t.messages > 0, leader) << r;
    for (int p : t.peers) EXPECT_TRUE(p == 0 || p == 1 || p == 5) << r << " -> " << p;
  }
}

TEST(Hierarchical, MalformedHostListsBuildTheRing) {
  Case c{contiguous({2, 2}), 7, 3, false, bcclSum};
  for (const Hosts& bad : {Hosts{{0, 1}, {2}}, Hosts{{0, 1}, {1, 2, 3}}, Hosts{{0, 1, 2, 3, 4}},
                           Hosts{{0, 1}, {}, {2, 3}}})
    EXPECT_EQ(buildHierarchicalAllReduce(shapeOf(c, 0), bad).algorithm, "ring");
  // Order does not matter: lists and ranks are sorted first.
  EXPECT_EQ(buildHierarchicalAllReduce(shapeOf(c, 0), Hosts{{3, 2}, {1, 0}}).algorithm, "hier");
}

}  // namespace
}  // namespace bccl
