// The topology-aware builders (tree, rd, rhd, bruck), checked symbolically like schedule_test.cc
// checks the ring and chain: every rank count 1..17, awkward element counts, tiny chunks,
// in-place, averaging and several roots, in schedule order and in random execution orders. Also
// pins the structural promises the cost model relies on (rounds, messages, tree shapes).
#include <gtest/gtest.h>

#include <iterator>
#include <map>
#include <set>
#include <string>

#include "algorithms/builders_extra.h"
#include "core/dtype.h"
#include "sim/collective_cases.h"
#include "sim/schedule_sim.h"
#include "sim/sim_limits.h"

namespace bccl {
namespace {

using sim::maxSimulatedRanks;

using sim::Layout;
using sim::RankState;
using sim::Sym;

using sim::Coll;

struct Builder {
  const char* name;
  Coll coll;
  Schedule (*build)(const CollectiveShape&);
};

const Builder kBuilders[] = {
    {"tree_allreduce", Coll::kAllReduce, buildTreeAllReduce},
    {"tree_broadcast", Coll::kBroadcast, buildTreeBroadcast},
    {"tree_reduce", Coll::kReduce, buildTreeReduce},
    {"rd_allreduce", Coll::kAllReduce, buildRecursiveDoublingAllReduce},
    {"rhd_allreduce", Coll::kAllReduce, buildRabenseifnerAllReduce},
    {"rhd_reducescatter", Coll::kReduceScatter, buildRecursiveHalvingReduceScatter},
    {"rd_allgather", Coll::kAllGather, buildRecursiveDoublingAllGather},
    {"bruck_allgather", Coll::kAllGather, buildBruckAllGather},
};

bool reduces(Coll c) {
  return c == Coll::kAllReduce || c == Coll::kReduceScatter || c == Coll::kReduce;
}
bool rooted(Coll c) { return c == Coll::kBroadcast || c == Coll::kReduce; }

struct Case {
  const Builder* builder;
  int nranks;
  size_t count;
  bool inPlace;
  size_t chunkElems;
  bcclRedOp_t op;
  int root;
  bool shuffled = false;  // an allreduce built for places in sim::shuffledOrder (ring order)
};

Layout layoutFor(const Case& c, int rank) {
  return sim::layoutFor(c.builder->coll, c.nranks, c.count, c.inPlace, rank);
}

Schedule build(const Case& c, int rank) {
  CollectiveShape s;
  s.rank = rank;
  s.nranks = c.nranks;
  s.count = c.count;
  s.dtype = bcclFloat32;
  s.op = c.op;
  s.root = c.root;
  s.inPlace = c.inPlace;
  s.chunkBytes = c.chunkElems * 4;
  if (!c.shuffled) return c.builder->build(s);
  s.ringOrder = sim::shuffledOrder(c.nranks);
  return buildInRingOrder(c.builder->build, s);
}

// The expected receive-buffer element `i` of `rank`, or an invalid Sym for "don't care".
Sym expected(const Case& c, int rank, size_t i) {
  return sim::expectedElement(c.builder->coll, c.nranks, c.count, c.op, c.root, rank, i);
}

std::string runCase(const Case& c, uint64_t seed = 0) {
  std::vector<RankState> ranks(c.nranks);
  for (int r = 0; r < c.nranks; ++r) {
    RankState& st = ranks[r];
    st.schedule = build(c, r);
    st.layout = layoutFor(c, r);
    st.memory.assign(st.layout.memoryCount, Sym{});
    for (size_t i = 0; i < st.layout.sendCount; ++i)
      st.memory[st.layout.sendOffset + i] = sim::input(r, c.nranks, static_cast<long>(i));
  }
  std::string fault = sim::simulate(ranks, seed);
  if (!fault.empty()) return fault;
  for (int r = 0; r < c.nranks; ++r)
    for (size_t i = 0; i < ranks[r].layout.recvCount; ++i) {
      Sym want = expected(c, r, i);
      if (!want.valid) continue;
      const Sym& got = ranks[r].memory[ranks[r].layout.recvOffset + i];
      if (!(got == want))
        return "rank " + std::to_string(r) + " element " + std::to_string(i) + ": got " +
               sim::describe(got) + ", want " + sim::describe(want);
    }
  return "";
}

// The transports may complete a send only once the peer has received it (shm hands a large
// message over by letting the receiver read the sender's buffer). The simulator buffers sends,
// so it cannot see a receive that waits for a send to the same peer while that peer waits
// likewise. This replays the schedules, without data, under that strictest rule: a send
// completes when its receive has, a receive when its send is posted, and each is posted in
// schedule order per peer and direction once its dependencies are done.
std::string rendezvousDeadlock(const std::vector<Schedule>& s) {
  const int n = static_cast<int>(s.size());
  std::vector<std::vector<int>> match(n), prev(n);  // per step: matching step, previous in queue
  std::vector<std::vector<char>> posted(n), done(n);
  std::map<std::pair<int, int>, std::vector<uint32_t>> sends, recvs;  // (from, to) in order
  for (int r = 0; r < n; ++r) {
    match[r].assign(s[r].steps.size(), -1);
    prev[r].assign(s[r].steps.size(), -1);
    posted[r].assign(s[r].steps.size(), 0);
    done[r].assign(s[r].steps.size(), 0);
    for (uint32_t i = 0; i < s[r].steps.size(); ++i) {
      const Step& st = s[r].steps[i];
      if (st.kind == StepKind::kCopy || st.kind == StepKind::kScale) continue;
      auto& queue = st.kind == StepKind::kSend ? sends[{r, st.peer}] : recvs[{st.peer, r}];
      if (!queue.empty()) prev[r][i] = static_cast<int>(queue.back());
      queue.push_back(i);
    }
  }
  for (const auto& kv : sends) {
    const auto& in = recvs[kv.first];
    if (in.size() != kv.second.size()) return "unmatched messages";
    for (size_t k = 0; k < in.size(); ++k) {
      match[kv.first.first][kv.second[k]] = static_cast<int>(in[k]);
      match[kv.first.second][in[k]] = static_cast<int>(kv.second[k]);
    }
  }
  for (bool moved = true; moved;) {
    moved = false;
    for (int r = 0; r < n; ++r)
      for (uint32_t i = 0; i < s[r].steps.size(); ++i) {
        if (done[r][i]) continue;
        const Step& st = s[r].steps[i];
        bool ready = true;
        for (uint32_t d = 0; d < st.depCount; ++d)
          ready = ready && done[r][s[r].deps[st.depBegin + d]];
        if (st.kind == StepKind::kCopy || st.kind == StepKind::kScale) {
          done[r][i] = ready;
          moved = moved || ready;
          continue;
        }
        if (!posted[r][i] && ready && (prev[r][i] < 0 || posted[r][prev[r][i]])) {
          posted[r][i] = 1;
          moved = true;
        }
        const int m = match[r][i];
        if (m < 0)
          return "rank " + std::to_string(r) + " step #" + std::to_string(i) + " unmatched";
        if (posted[r][i] && (st.kind == StepKind::kSend ? done[st.peer][m] : posted[st.peer][m])) {
          done[r][i] = 1;
          moved = true;
        }
      }
  }
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < done[r].size(); ++i)
      if (!done[r][i])
        return "rank " + std::to_string(r) + " step #" + std::to_string(i) + " never completes";
  return "";
}

std::string label(const Case& c) {
  return std::string(c.builder->name) + " nranks=" + std::to_string(c.nranks) +
         " count=" + std::to_string(c.count) + (c.inPlace ? " in-place" : " out-of-place") +
         " chunk=" + std::to_string(c.chunkElems) + " op=" + redOpName(c.op) +
         " root=" + std::to_string(c.root) + (c.shuffled ? " in ring order" : "");
}

class Algorithms : public ::testing::TestWithParam<size_t> {
 protected:
  const Builder& builder() const { return kBuilders[GetParam()]; }
};

TEST_P(Algorithms, EveryShapeIsExact) {
  const Builder& b = builder();
  int cases = 0;
  for (int n = 1; n <= maxSimulatedRanks(); ++n)
    for (size_t count : {0, 1, 2, 7, 19, 64})
      for (size_t chunk : {1, 3, 1000})
        for (bool inPlace : {false, true})
          for (bcclRedOp_t op : {bcclSum, bcclAvg})
            for (int root : std::set<int>{0, n - 1, n / 2}) {
              if ((op == bcclAvg && !reduces(b.coll)) || (root != 0 && !rooted(b.coll))) continue;
              for (bool shuffled : {false, true}) {
                if (shuffled && b.coll != Coll::kAllReduce) continue;
                Case c{&b, n, count, inPlace, chunk, op, root, shuffled};
                ASSERT_EQ(runCase(c), "") << label(c);
                ++cases;
              }
            }
  EXPECT_GE(cases, maxSimulatedRanks() * 6 * 3 * 2);
}

// Random execution orders: a receive that may land where a send still reads, or a step that
// relies on an undeclared order, corrupts some order.
TEST_P(Algorithms, AnyExecutionOrderIsExact) {
  const Builder& b = builder();
  for (int n = 2; n <= 9; ++n)
    for (size_t count : {7, 19})
      for (size_t chunk : {1, 3})
        for (bool inPlace : {false, true})
          for (uint64_t seed = 1; seed <= 3; ++seed) {
            const bcclRedOp_t op = seed == 3 && reduces(b.coll) ? bcclAvg : bcclSum;
            const bool shuffled = b.coll == Coll::kAllReduce && seed != 2;
            const int root = (n / 2 + static_cast<int>(seed)) % n;
            Case c{&b, n, count, inPlace, chunk, op, root, shuffled};
            ASSERT_EQ(runCase(c, seed), "") << label(c) << " seed " << seed;
          }
}

// Deadlock freedom when every send waits for its receiver (see rendezvousDeadlock).
TEST_P(Algorithms, NoDeadlockWhenSendsWaitForTheirReceiver) {
  const Builder& b = builder();
  for (int n = 1; n <= maxSimulatedRanks(); ++n)
    for (size_t count : {1, 7, 19})
      for (size_t chunk : {1, 3})
        for (bool inPlace : {false, true})
          for (bcclRedOp_t op : {bcclSum, bcclAvg})
            for (int root : std::set<int>{0, n / 2}) {
              if ((op == bcclAvg && !reduces(b.coll)) || (root != 0 && !rooted(b.coll))) continue;
              Case c{&b, n, count, inPlace, chunk, op, root};
              std::vector<Schedule> all;
              for (int r = 0; r < n; ++r) all.push_back(build(c, r));
              ASSERT_EQ(rendezvousDeadlock(all), "") << label(c);
            }
}

INSTANTIATE_TEST_SUITE_P(New, Algorithms, ::testing::Range<size_t>(0, std::size(kBuilders)),
                         [](const auto& info) { return std::string(kBuilders[info.param].name); });

CollectiveShape shapeOf(int rank, int n, size_t count, size_t chunkBytes = 1 << 20) {
  CollectiveShape s;
  s.rank = rank;
  s.nranks = n;
  s.count = count;
  s.dtype = bcclFloat32;
  s.chunkBytes = chunkBytes;
  return s;
}

struct Traffic {
  int sends = 0;
  std::set<int> peers;
};

Traffic sendsOf(const Schedule& s) {
  Traffic t;
  for (const Step& st : s.steps)
    if (st.kind == StepKind::kSend) {
      ++t.sends;
      t.peers.insert(st.peer);
    }
  return t;
}

int ceilLog2(int n) {
  int l = 0;
  while ((1 << l) < n) ++l;
  return l;
}

// The latency claims: unchunked, each rank sends once per round.
TEST(AlgorithmShapes, RoundCounts) {
  for (int n = 2; n <= 64; ++n) {
    int p = 1;
    while (p * 2 <= n) p *= 2;
    const int lg = ceilLog2(p);
    for (int r = 0; r < n; ++r) {
      const bool paired = r < 2 * (n - p), sitsOut = paired && r % 2 == 0;
      EXPECT_EQ(sendsOf(buildBruckAllGather(shapeOf(r, n, 4))).sends, ceilLog2(n)) << n << " " << r;
      const int rd = sendsOf(buildRecursiveDoublingAllReduce(shapeOf(r, n, 4))).sends;
      EXPECT_EQ(rd, sitsOut ? 1 : lg + (paired ? 1 : 0)) << n << " " << r;
      // Rabenseifner with one element per participant: every round moves something.
      const int rhd = sendsOf(buildRabenseifnerAllReduce(shapeOf(r, n, p))).sends;
      EXPECT_EQ(rhd, sitsOut ? 1 : 2 * lg + (paired ? 1 : 0)) << n << " " << r;
    }
  }
}

// Each of the two allreduce trees carries one half; with two elements and one-element chunks
// a rank reduces element 0 only where it is interior in tree 0 and element 1 in tree 1.
TEST(AlgorithmShapes, DoubleTreeInteriorRanksAreDisjoint) {
  for (int n = 2; n <= 64; ++n) {
    int interior[2] = {0, 0};
    for (int r = 0; r < n; ++r) {
      bool reduces[2] = {false, false};
      for (const Step& st : buildTreeAllReduce(shapeOf(r, n, 2, 4)).steps)
        if (st.kind == StepKind::kRecvReduce) reduces[st.dst.offset / 4] = true;
      EXPECT_FALSE(reduces[0] && reduces[1]) << "n=" << n << " rank " << r;
      interior[0] += reduces[0];
      interior[1] += reduces[1];
    }
    EXPECT_GE(interior[0], 1);
    EXPECT_GE(interior[1], 1);
  }
}

// Binary trees: a broadcast rank sends to at most two children, an allreduce rank talks to at
// most four peers (parent and two children in one tree, parent in the other); and the depth is
// logarithmic: with one
// chunk, every rank of a broadcast is at most floor(log2 n) hops from the root.
TEST(AlgorithmShapes, TreesAreBinaryAndShallow) {
  for (int n = 2; n <= 64; ++n)
    for (int root : {0, n / 3, n - 1}) {
      std::vector<int> parent(n, -1);
      for (int r = 0; r < n; ++r) {
        CollectiveShape s = shapeOf(r, n, 1);
        s.root = root;
        Schedule b = buildTreeBroadcast(s);
        EXPECT_LE(sendsOf(b).peers.size(), 2u);
        for (const Step& st : b.steps)
          if (st.kind == StepKind::kRecv) parent[r] = st.peer;
        EXPECT_EQ(parent[r] < 0, r == root) << "n=" << n << " rank " << r;
        EXPECT_LE(sendsOf(buildTreeAllReduce(shapeOf(r, n, 2))).peers.size(), 4u);
      }
      for (int r = 0; r < n; ++r) {
        int hops = 0;
        for (int x = r; x != root && hops <= n; x = parent[x]) ++hops;
        EXPECT_LE(hops, ceilLog2(n + 1) - 1) << "n=" << n << " rank " << r;
      }
    }
}

}  // namespace
}  // namespace bccl
