// Every schedule builder, checked symbolically over many rank counts, element counts, chunk
// sizes and in-place variants: no transport, just the data flow. A wrong dependency, a message
// that does not match, or an element reduced twice fails here with the offending step named.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <tuple>

#include "algorithms/builders.h"
#include "algorithms/collective.h"
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

const char* name(Coll c) {
  static const char* names[] = {"allreduce", "allgather", "reducescatter", "broadcast",
                                "reduce",    "alltoall",  "barrier"};
  return names[static_cast<int>(c)];
}

bool reduces(Coll c) {
  return c == Coll::kAllReduce || c == Coll::kReduceScatter || c == Coll::kReduce;
}
bool rooted(Coll c) { return c == Coll::kBroadcast || c == Coll::kReduce; }

struct Case {
  Coll coll;
  int nranks;
  size_t count;
  bool inPlace;
  size_t chunkElems;
  bcclRedOp_t op;
  int root;
  size_t ringWindow = 0;  // 0: the whole-segment pipeline (network links)
  // The rings in another order than the ranks' (sim::shuffledOrder).
  bool shuffledRing = false;
};

bool usesRing(Coll c) {
  return c == Coll::kAllReduce || c == Coll::kAllGather || c == Coll::kReduceScatter;
}

Layout layoutFor(const Case& c, int rank) {
  return sim::layoutFor(c.coll, c.nranks, c.count, c.inPlace, rank);
}

Schedule build(const Case& c, int rank) {
  CollectiveShape s;
  s.rank = rank;
  s.nranks = c.nranks;
  s.count = c.count;
  s.dtype = c.coll == Coll::kBarrier ? bcclUint8 : bcclFloat32;
  s.op = c.op;
  s.root = c.root;
  s.inPlace = c.inPlace;
  s.chunkBytes = c.chunkElems * 4;
  s.ringWindow = c.ringWindow;
  if (c.shuffledRing) s.ringOrder = sim::shuffledOrder(c.nranks);
  switch (c.coll) {
    case Coll::kAllReduce:
      return buildRingAllReduce(s);
    case Coll::kAllGather:
      return buildRingAllGather(s);
    case Coll::kReduceScatter:
      return buildRingReduceScatter(s);
    case Coll::kBroadcast:
      return buildChainBroadcast(s);
    case Coll::kReduce:
      return buildChainReduce(s);
    case Coll::kAllToAll:
      return buildPairwiseAllToAll(s);
    case Coll::kBarrier:
      return buildDisseminationBarrier(s);
  }
  return Schedule{};
}

Sym expected(const Case& c, int rank, size_t i) {
  return sim::expectedElement(c.coll, c.nranks, c.count, c.op, c.root, rank, i);
}

std::string runCase(const Case& c, uint64_t seed = 0) {
  std::vector<RankState> ranks(c.nranks);
  for (int r = 0; r < c.nranks; ++r) {
    RankState& st = ranks[r];
    st.schedule = build(c, r);
    st.layout = layoutFor(c, r);
    st.memory.assign(st.layout.memoryCount, Sym{});
    st.scratchHoldsTokens = c.coll == Coll::kBarrier;
    for (size_t i = 0; i < st.layout.sendCount; ++i)
      st.memory[st.layout.sendOffset + i] = sim::input(r, c.nranks, static_cast<long>(i));
  }
  std::string fault = sim::simulate(ranks, seed);
  if (!fault.empty()) return fault;
  // A barrier's whole point: no rank finishes before every rank has started.
  if (c.coll == Coll::kBarrier)
    for (int r = 0; r < c.nranks; ++r)
      for (int x = 0; x < c.nranks; ++x)
        if (!ranks[r].knows[x])
          return "rank " + std::to_string(r) + " can leave the barrier before rank " +
                 std::to_string(x) + " arrives";
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

std::string label(const Case& c) {
  return std::string(name(c.coll)) + " nranks=" + std::to_string(c.nranks) +
         " count=" + std::to_string(c.count) + (c.inPlace ? " in-place" : " out-of-place") +
         " chunk=" + std::to_string(c.chunkElems) + " op=" + redOpName(c.op) +
         " root=" + std::to_string(c.root);
}

class ScheduleSymbolic : public ::testing::TestWithParam<Coll> {};

TEST_P(ScheduleSymbolic, EveryShapeIsExact) {
  const Coll coll = GetParam();
  int cases = 0;
  for (int n = 1; n <= maxSimulatedRanks(); ++n)
    for (size_t count : {0, 1, 2, 7, 19, 64}) {
      if (coll == Coll::kBarrier && count != 0) continue;
      for (size_t chunk : {1, 3, 1000})
        for (bool inPlace : {false, true})
          for (bcclRedOp_t op : {bcclSum, bcclAvg})
            for (int root : {0, n - 1}) {
              if ((op == bcclAvg && !reduces(coll)) || (root != 0 && !rooted(coll))) continue;
              for (size_t window : {0, 1, 2})  // the ring's windows (shared memory)
                for (bool shuffled : {false, true}) {
                  if (shuffled && !usesRing(coll)) continue;
                  Case c{coll, n, count, inPlace, chunk, op, root, window, shuffled};
                  std::string fault = runCase(c);
                  ASSERT_EQ(fault, "") << label(c) << " ring window " << window
                                       << (shuffled ? " shuffled ring" : "");
                  ++cases;
                }
            }
    }
  EXPECT_GE(cases, maxSimulatedRanks() * 6);  // at least every rank count x chunk x placement
}

// The same shapes with steps run in random orders: a missing write-after-read dependency
// (a receive landing where an earlier send still reads) corrupts what is sent in some order.
TEST_P(ScheduleSymbolic, AnyExecutionOrderIsExact) {
  const Coll coll = GetParam();
  for (int n = 2; n <= 9; ++n)
    for (size_t count : {7, 19})
      for (size_t chunk : {1, 3})
        for (bool inPlace : {false, true})
          for (uint64_t seed = 1; seed <= 4; ++seed) {
            const size_t count0 = coll == Coll::kBarrier ? 0 : count, window = seed % 3;
            const bool shuffled = usesRing(coll) && seed % 2 == 0;
            Case c{coll, n, count0, inPlace, chunk, bcclSum, n / 2, window, shuffled};
            ASSERT_EQ(runCase(c, seed), "") << label(c) << " seed " << seed << " window " << window
                                            << (shuffled ? " shuffled ring" : "");
          }
}

INSTANTIATE_TEST_SUITE_P(AllBuilders, ScheduleSymbolic,
                         ::testing::Values(Coll::kAllReduce, Coll::kAllGather, Coll::kReduceScatter,
                                           Coll::kBroadcast, Coll::kReduce, Coll::kAllToAll,
                                           Coll::kBarrier),
                         [](const auto& info) { return std::string(name(info.param)); });

// The simulator itself must catch faults, or the test above proves nothing.
TEST(ScheduleSimulator, CatchesUnmatchedAndDoubleReduced) {
  Case c{Coll::kAllReduce, 3, 6, false, 2, bcclSum, 0};
  std::vector<RankState> ranks(3);
  for (int r = 0; r < 3; ++r) {
    ranks[r].schedule = build(c, r);
    ranks[r].layout = layoutFor(c, r);
    ranks[r].memory.assign(ranks[r].layout.memoryCount, Sym{});
    for (size_t i = 0; i < 6; ++i) ranks[r].memory[i] = sim::input(r, 3, static_cast<long>(i));
  }
  ranks[1].schedule.steps.pop_back();  // drop a receive: a send goes unmatched
  EXPECT_NE(sim::simulate(ranks), "");

  std::vector<RankState> twice(2);
  for (int r = 0; r < 2; ++r) {
    Schedule& s = twice[r].schedule;
    s.nranks = 2;
    s.elemSize = 4;
    s.numBuffers = 3;
    twice[r].layout = Layout{0, 1, 1, 1, 2};
    twice[r].memory = {sim::input(r, 2, 0), Sym{}};
    s.add(sendStep(1 - r, BufRef{1, 0}, 4));
    uint32_t got = s.add(recvReduceStep(1 - r, BufRef{2, 0}, BufRef{1, 0}, 4));
    s.add(recvReduceStep(1 - r, BufRef{2, 0}, BufRef{2, 0}, 4), {got});
    s.add(sendStep(1 - r, BufRef{1, 0}, 4));
  }
  std::string fault = sim::simulate(twice);
  ASSERT_EQ(fault, "");  // runs, but element 0 now holds the peer twice:
  EXPECT_EQ(twice[0].memory[1].counts, (std::vector<int>{1, 2}));
}

TEST(PointToPointSchedule, SelfSendNeedsMatchingReceive) {
  OpArgs send;
  send.kind = CollKind::kSend;
  send.count = 4;
  send.dtype = bcclInt32;
  send.peer = 0;
  EXPECT_FALSE(buildPointToPointSchedule({send}, 0, 2).isOk());
  OpArgs recv = send;
  recv.kind = CollKind::kRecv;
  StatusOr<Schedule> s = buildPointToPointSchedule({send, recv}, 0, 2);
  ASSERT_TRUE(s.isOk());
  ASSERT_EQ(s.value().steps.size(), 1u);
  EXPECT_EQ(s.value().steps[0].kind, StepKind::kCopy);
  recv.count = 3;
  EXPECT_FALSE(buildPointToPointSchedule({send, recv}, 0, 2).isOk());
}

}  // namespace
}  // namespace bccl
