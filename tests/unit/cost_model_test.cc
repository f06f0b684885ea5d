// The cost model's shape: who wins where. Absolute numbers depend on calibration; these are the
// crossovers selection relies on (latency-bound sizes favour log-round algorithms, bandwidth-
// bound sizes the ring and Rabenseifner, slow inter-host links the algorithms that keep big
// transfers on a host), and the bookkeeping of rankAlgorithms.
#include "algorithms/cost_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "algorithms/collective.h"

namespace bccl {
namespace {

constexpr size_t kMiB = 1 << 20;
const LinkCost kShm = kDefaultIntraHostLink;
const LinkCost kNet = kDefaultInterHostLink;

double predict(CollKind kind, const char* algo, size_t bytes, int n, int hosts = 1) {
  return predictSeconds(kind, algo, bytes, n, kShm, kNet, hosts);
}

TEST(CostModel, SmallAllReduceFavoursRecursiveDoubling) {
  EXPECT_LT(predict(CollKind::kAllReduce, "rd", 8, 8), predict(CollKind::kAllReduce, "ring", 8, 8));
  EXPECT_EQ(rankAlgorithms(CollKind::kAllReduce, 8, 8, kShm, kNet, 1).front().algorithm, "rd");
  // Still true across hosts and for rank counts that need a fold.
  EXPECT_LT(predict(CollKind::kAllReduce, "rd", 8, 12, 3),
            predict(CollKind::kAllReduce, "ring", 8, 12, 3));
}

TEST(CostModel, LargeAllReduceFavoursBandwidthOptimalAlgorithms) {
  for (int n : {4, 8, 13}) {
    const size_t big = 256 * kMiB;
    const double rd = predict(CollKind::kAllReduce, "rd", big, n);
    const double best = std::min(predict(CollKind::kAllReduce, "ring", big, n),
                                 predict(CollKind::kAllReduce, "rhd", big, n));
    EXPECT_LT(best, rd) << n;
    const std::string first =
        rankAlgorithms(CollKind::kAllReduce, big, n, kShm, kNet, 1)[0].algorithm;
    EXPECT_TRUE(first == "ring" || first == "rhd") << first;
  }
}

// Rabenseifner sends in each round what the round before reduced, a whole block later; the ring
// forwards each chunk within a window of a few. Past each rank's share of the cache that block
// comes back from memory, so a large allreduce goes to the ring (and reduce-scatter stays
// there); while the blocks fit, or with no cache size given, rhd's fewer rounds still win.
TEST(CostModel, BlocksPastTheCacheShareFavourTheRingOverRabenseifner) {
  const size_t share = 4 * kMiB;
  auto first = [&](CollKind kind, size_t bytes, int n, size_t cache) {
    return rankAlgorithms(kind, bytes, n, kShm, kNet, 1, kDefaultReduceBytesPerSecond,
                          kDefaultPipelineChunkBytes, cache)
        .front()
        .algorithm;
  };
  for (int n : {4, 8}) {
    EXPECT_EQ(first(CollKind::kAllReduce, 256 * kMiB, n, share), "ring") << n;
    EXPECT_EQ(first(CollKind::kReduceScatter, 32 * kMiB, n, share), "ring") << n;
    EXPECT_EQ(first(CollKind::kAllReduce, 256 * kMiB, n, 0), "rhd") << n;
    EXPECT_EQ(first(CollKind::kAllReduce, 256 * 1024, n, share), "rhd") << n;
  }
}

TEST(CostModel, ManyRanksFavourTreesForMediumBroadcastAndAllReduce) {
  // 64 KiB over 64 ranks: the chain's 63 hops cost more than the tree's doubled bytes.
  EXPECT_LT(predict(CollKind::kBroadcast, "tree", 64 * 1024, 64),
            predict(CollKind::kBroadcast, "chain", 64 * 1024, 64));
  EXPECT_LT(predict(CollKind::kReduce, "tree", 64 * 1024, 64),
            predict(CollKind::kReduce, "chain", 64 * 1024, 64));
  EXPECT_LT(predict(CollKind::kAllReduce, "tree", 64 * 1024, 64),
            predict(CollKind::kAllReduce, "ring", 64 * 1024, 64));
  // A big broadcast over few ranks: the chain's full-bandwidth pipeline wins.
  EXPECT_LT(predict(CollKind::kBroadcast, "chain", 256 * kMiB, 4),
            predict(CollKind::kBroadcast, "tree", 256 * kMiB, 4));
}

TEST(CostModel, BruckWinsSmallAllGatherAtAnyRankCount) {
  for (int n : {5, 12, 17}) {
    EXPECT_LT(predict(CollKind::kAllGather, "bruck", 16, n),
              predict(CollKind::kAllGather, "ring", 16, n))
        << n;
    // Not a power of two: recursive doubling pays two extra fold messages.
    EXPECT_LT(predict(CollKind::kAllGather, "bruck", 16, n),
              predict(CollKind::kAllGather, "rd", 16, n))
        << n;
  }
  // Large blocks: the rotation copies make Bruck lose to the ring.
  EXPECT_LT(predict(CollKind::kAllGather, "ring", 64 * kMiB, 8),
            predict(CollKind::kAllGather, "bruck", 64 * kMiB, 8));
}

TEST(CostModel, PowerOfTwoAllGatherFavoursRecursiveDoublingAtAnySize) {
  // The same bytes cross the same links and both copy my block: rd's log2 n rounds cost less
  // than the ring's n - 1. Not a power of two: rd's fold sends everything twice more.
  for (size_t bytes : {64 * 1024ul, 4 * kMiB, 256 * kMiB}) {
    for (int n : {4, 8})
      EXPECT_LT(predict(CollKind::kAllGather, "rd", bytes, n),
                predict(CollKind::kAllGather, "ring", bytes, n))
          << n << " ranks, " << bytes;
    EXPECT_LT(predict(CollKind::kAllGather, "ring", bytes, 6),
              predict(CollKind::kAllGather, "rd", bytes, 6))
        << bytes;
  }
}

TEST(CostModel, SlowInterHostLinksFavourAlgorithmsThatStayOnHost) {
  // 16 ranks on 2 hosts: every ring step waits on the network; Rabenseifner exchanges the big
  // halves within a host and sends only 1/16 of the data across.
  const size_t big = 64 * kMiB;
  EXPECT_LT(predict(CollKind::kAllReduce, "rhd", big, 16, 2),
            predict(CollKind::kAllReduce, "ring", big, 16, 2));
  EXPECT_GT(predict(CollKind::kAllReduce, "ring", big, 16, 2),
            predict(CollKind::kAllReduce, "ring", big, 16, 1));
  // On one host the two are within the alpha terms of each other.
  const double ring = predict(CollKind::kAllReduce, "ring", big, 16, 1);
  EXPECT_NEAR(predict(CollKind::kAllReduce, "rhd", big, 16, 1), ring, 0.01 * ring);
  // Reduce-scatter's halving must pair the farthest ranks first to keep each rank's blocks
  // contiguous, so its big halves are the ones crossing hosts: there the ring wins.
  EXPECT_LT(predict(CollKind::kReduceScatter, "ring", big / 16, 16, 2),
            predict(CollKind::kReduceScatter, "rhd", big / 16, 16, 2));
}

TEST(CostModel, HierarchicalBeatsRingAcrossASlowInterHostLink) {
  // 8 ranks as 2 hosts x 4 over 1 GbE: the ring pushes 2(n-1)/n of the data through the
  // network from one rank per host; hier sends 1/L per rail, on all 4 rails at once.
  const LinkCost slow{100e-6, 125e6};
  auto at = [&](const char* algo, size_t bytes) {
    return predictSeconds(CollKind::kAllReduce, algo, bytes, 8, kShm, slow, 2);
  };
  for (size_t bytes : {16 * kMiB, 64 * kMiB, 256 * kMiB}) {
    EXPECT_LT(at("hier", bytes) * 1.5, at("ring", bytes)) << bytes;
    // The network phase dominates: about s over the link, against the ring's 1.75 s.
    EXPECT_NEAR(at("hier", bytes), bytes / slow.bytesPerSecond, 0.1 * at("hier", bytes));
  }
  // The host-list form agrees for equal hosts, and unequal hosts pay the leader variant.
  EXPECT_EQ(predictHierarchicalAllReduce(64 * kMiB, {4, 4}, kShm, slow), at("hier", 64 * kMiB));
  EXPECT_GT(predictHierarchicalAllReduce(64 * kMiB, {5, 3}, kShm, slow), at("hier", 64 * kMiB));
  // Latency-bound sizes: recursive doubling's 3 rounds beat hier's 3 + 1 + 3 steps.
  EXPECT_EQ(rankAlgorithms(CollKind::kAllReduce, 8, 8, kShm, slow, 2).front().algorithm, "rd");
  // One host: hier is the ring (reduce-scatter + allgather) and the tie goes to the ring.
  EXPECT_EQ(predict(CollKind::kAllReduce, "hier", 64 * kMiB, 8, 1),
            predict(CollKind::kAllReduce, "ring", 64 * kMiB, 8, 1));
  for (const Candidate& c : rankAlgorithms(CollKind::kAllReduce, 64 * kMiB, 8, kShm, kNet, 1)) {
    if (c.algorithm == "ring") break;
    EXPECT_NE(c.algorithm, "hier");
  }
}

TEST(CostModel, GrowsWithBytesAndRanks) {
  for (CollKind kind : {CollKind::kAllReduce, CollKind::kAllGather, CollKind::kReduceScatter,
                        CollKind::kBroadcast, CollKind::kReduce})
    for (const std::string& a : algorithmsFor(kind))
      for (int hosts : {1, 2}) {
        double previous = 0;
        for (size_t bytes = 1; bytes <= 256 * kMiB; bytes *= 4) {
          const double t = predictSeconds(kind, a, bytes, 8, kShm, kNet, hosts);
          EXPECT_GT(t, 0) << a;
          EXPECT_TRUE(std::isfinite(t)) << a;
          EXPECT_GE(t, previous) << a << " " << bytes;
          previous = t;
        }
        EXPECT_LE(predictSeconds(kind, a, kMiB, 4, kShm, kNet, hosts),
                  predictSeconds(kind, a, kMiB, 32, kShm, kNet, hosts))
            << a;
      }
}

TEST(CostModel, RankingListsEveryApplicableAlgorithmBestFirst) {
  const std::set<std::string> allReduce{"ring", "tree", "rd", "rhd", "hier"};
  for (size_t bytes : {size_t{8}, 64 * size_t{1024}, 256 * kMiB}) {
    std::vector<Candidate> ranked = rankAlgorithms(CollKind::kAllReduce, bytes, 8, kShm, kNet, 2);
    ASSERT_EQ(ranked.size(), allReduce.size());
    std::set<std::string> seen;
    for (size_t i = 0; i < ranked.size(); ++i) {
      seen.insert(ranked[i].algorithm);
      EXPECT_EQ(ranked[i].seconds,
                predictSeconds(CollKind::kAllReduce, ranked[i].algorithm, bytes, 8, kShm, kNet, 2));
      if (i > 0) {
        EXPECT_LE(ranked[i - 1].seconds, ranked[i].seconds);
      }
    }
    EXPECT_EQ(seen, allReduce);
  }
  EXPECT_EQ(rankAlgorithms(CollKind::kAllGather, 8, 8, kShm, kNet, 1).size(), 3u);
  EXPECT_EQ(rankAlgorithms(CollKind::kReduceScatter, 8, 8, kShm, kNet, 1).size(), 2u);
  EXPECT_EQ(rankAlgorithms(CollKind::kBroadcast, 8, 8, kShm, kNet, 1).size(), 2u);
  EXPECT_TRUE(rankAlgorithms(CollKind::kAllToAll, 8, 8, kShm, kNet, 1).empty());
}

TEST(CostModel, InapplicableOrTrivial) {
  EXPECT_TRUE(std::isinf(predict(CollKind::kAllGather, "tree", 8, 8)));
  EXPECT_TRUE(std::isinf(predict(CollKind::kBroadcast, "ring", 8, 8)));
  EXPECT_TRUE(std::isinf(predict(CollKind::kAllReduce, "nonsense", 8, 8)));
  EXPECT_EQ(predict(CollKind::kAllReduce, "ring", 8, 1), 0);
  EXPECT_EQ(predict(CollKind::kAllReduce, "rd", 0, 8), 0);
  // More hosts than ranks is clamped, not a division by zero.
  EXPECT_TRUE(std::isfinite(predict(CollKind::kAllReduce, "rhd", kMiB, 3, 8)));
}

// The boards ("direct"): one synchronisation whatever the rank count, but the post is copied in
// before anyone reads it, and message schedules pay a fixed cost per operation that the boards
// do not. So at 2 ranks (one round either way) direct wins only tiny messages, and at 8 ranks
// (7 ring rounds, 3 of rd) it wins allgathers up to the board's capacity. Measured here, 2 ranks
// on 2 cores: ring 0.57 / 0.96 / 2.8 us against direct 0.61 / 1.46 / 5.4 us at 8 / 32 / 128 KiB;
// 8 ranks, 256 KiB allgather: direct 64-109 us against 189-214 us for the ring and rd.
struct Calibration {
  double alphaUs, gbps, reduceGbps, overheadUs, ranksPerCpu;
};
// As measured at init on this machine (2 cores): 2 ranks, and 8 ranks sharing the cores.
constexpr Calibration kTwoRanks{0.6, 13.9, 49.3, 0.3, 1}, kEightRanks{6.9, 5.99, 53.9, 1.1, 4};

SelectionContext boardContext(int nranks, const Calibration& c) {
  SelectionContext ctx;
  ctx.nranks = nranks;
  ctx.hosts = {{}};
  for (int r = 0; r < nranks; ++r) ctx.hosts[0].push_back(r);
  ctx.allShm = true;
  ctx.boardBytes = 256 * 1024;
  ctx.intraAlphaSeconds = c.alphaUs * 1e-6;
  ctx.intraBytesPerSecond = c.gbps * 1e9;
  ctx.reduceBytesPerSecond = c.reduceGbps * 1e9;
  ctx.scheduleOverheadSeconds = c.overheadUs * 1e-6;
  ctx.ranksPerCpu = c.ranksPerCpu;
  return ctx;
}

std::string chosenForAllGather(int nranks, size_t bytesPerRank, const Calibration& c) {
  const SelectionContext ctx = boardContext(nranks, c);
  OpArgs a;
  a.kind = CollKind::kAllGather;
  a.count = bytesPerRank;
  a.dtype = bcclUint8;
  return chooseAlgorithm(a, ctx).algorithm;
}

OpArgs floatSum(size_t bytes) {
  OpArgs a;
  a.kind = CollKind::kAllReduce;
  a.count = bytes / 4;
  a.dtype = bcclFloat32;
  a.op = bcclSum;
  return a;
}

// The message algorithm the model picks for an 8-rank allreduce (boards left out).
std::string chosenForAllReduce(size_t bytes, double ranksPerCpu) {
  SelectionContext ctx = boardContext(8, kEightRanks);
  ctx.ranksPerCpu = ranksPerCpu;
  return chooseAlgorithm(floatSum(bytes), ctx, /*allowDirect=*/false).algorithm;
}

// 8 ranks on 2 CPUs, per call (us), rd / Rabenseifner / direct: 8 KiB 49-61 / 55-64 / 36-45,
// 32 KiB 121-135 / 92-107 / 97-127, 128 KiB 364-427 / 224-278 / 339-354. Every rank copies and
// reduces at once, at a quarter of the calibrated rates; the model without that picked rd at 32
// KiB, the slowest of the three.
TEST(CostModel, RanksSharingCpusFavourFewerBytesOverFewerRounds) {
  EXPECT_EQ(chosenForAllReduce(32 * 1024, 1), "rd");  // what the uncontended rates pick
  EXPECT_NE(chosenForAllReduce(32 * 1024, 4), "rd");
  EXPECT_EQ(chosenForAllReduce(128 * 1024, 4), "rhd");
}

// The boards take every allreduce size at 8 ranks on 2 CPUs: tiny ones as one post every rank
// combines, from a few KiB as reduce-scatter and allgather rounds, which read n/2 times less
// for one more synchronisation. Measured here (us): 32 KiB: rounds 36, rd 92; 256 KiB: rounds
// 2.81 GB/s busbw, ring 1.57 (docs/measurements/sweep-20261207-s2-allreduce-mid.txt).
TEST(CostModel, ManyRankAllReducesGoToTheBoardsInRoundsFromAFewKiB) {
  const SelectionContext ctx = boardContext(8, kEightRanks);
  for (size_t bytes : {size_t{8}, size_t{8 << 10}, size_t{128 << 10}, size_t{8 << 20}})
    EXPECT_EQ(chooseAlgorithm(floatSum(bytes), ctx).algorithm, "direct") << bytes;
  EXPECT_FALSE(directAllReduceInRounds(floatSum(8), ctx));
  EXPECT_TRUE(directAllReduceInRounds(floatSum(128 << 10), ctx));
  EXPECT_TRUE(directAllReduceInRounds(floatSum(8 << 20), ctx)) << "past the board: always";
}

// Timed with every pair moving at once (ranks sharing CPUs), the intra rate is already one
// rank's share: the model must not divide it by the ranks per CPU again. 8 ranks on 2 CPUs so
// timed here: 10-19 us and 1.8-2.6 GB/s per pair, steady from launch to launch, where pairs timed
// alone gave 0.54-44.9 GB/s and the 4 KiB allreduce went to Rabenseifner (38 us, direct 17).
TEST(CostModel, AnIntraRateMeasuredUnderLoadIsNotSharedAgain) {
  constexpr Calibration kTogether{12.5, 2.2, 53.9, 6.0, 4};
  SelectionContext shared = boardContext(8, kTogether);
  shared.intraRateShared = true;
  SelectionContext alone = shared;
  alone.intraRateShared = false;
  alone.intraBytesPerSecond *= 4;
  OpArgs a;
  a.kind = CollKind::kAllReduce;
  a.dtype = bcclFloat32;
  a.op = bcclSum;
  for (size_t bytes : {size_t{4096}, size_t{128} << 10, size_t{256} << 20}) {
    a.count = bytes / 4;
    const Choice x = chooseAlgorithm(a, shared), y = chooseAlgorithm(a, alone);
    ASSERT_EQ(x.predictions.size(), y.predictions.size());
    for (size_t i = 0; i < x.predictions.size(); ++i) {
      EXPECT_EQ(x.predictions[i].first, y.predictions[i].first) << bytes;
      EXPECT_DOUBLE_EQ(x.predictions[i].second, y.predictions[i].second) << bytes;
    }
  }
  a.count = 1024;
  EXPECT_EQ(chooseAlgorithm(a, shared).algorithm, "direct");
  a.count = 32 * 1024;
  EXPECT_NE(chooseAlgorithm(a, shared).algorithm, "rd");
}

// Past the board's capacity an allgather goes a board area per round (direct.cc): each byte is
// copied in once and out once, where the ring copies it in and out at every step. 8 ranks on 2
// cores, measured here: 1.3-1.7x the ring's busbw from 4 to 64 MiB.
TEST(CostModel, BoardsWinTinyCollectivesAndManyRankAllGathersOfAnySize) {
  EXPECT_EQ(chosenForAllGather(2, 8, kTwoRanks), "direct");
  EXPECT_NE(chosenForAllGather(2, 64 * 1024, kTwoRanks), "direct");
  EXPECT_EQ(chosenForAllGather(8, 8, kEightRanks), "direct");
  EXPECT_EQ(chosenForAllGather(8, 32 * 1024, kEightRanks), "direct");
  EXPECT_EQ(chosenForAllGather(8, 512 * 1024, kEightRanks), "direct");  // in 2 rounds
  EXPECT_EQ(chosenForAllGather(8, 8 << 20, kEightRanks), "direct");     // in 32
}

// Two ranks: one step either way, so the ring's overlap of copies wins until the output outgrows
// this rank's share of the cache; past it, direct writes the output around the cache (no read
// for ownership) and wins (measured here: 1.4x / 1.9x the ring's busbw at 64 / 256 MiB).
TEST(CostModel, TwoRankAllGathersGoToTheBoardsOnlyPastTheCacheShare) {
  SelectionContext ctx = boardContext(2, kTwoRanks);
  ctx.cacheBytesPerRank = 16 << 20;
  OpArgs a;
  a.kind = CollKind::kAllGather;
  a.dtype = bcclUint8;
  a.count = 4 << 20;  // 8 MiB of output
  EXPECT_NE(chooseAlgorithm(a, ctx).algorithm, "direct");
  a.count = 32 << 20;  // 64 MiB
  EXPECT_EQ(chooseAlgorithm(a, ctx).algorithm, "direct");
  ctx.cacheBytesPerRank = 0;  // unknown: never streamed
  EXPECT_NE(chooseAlgorithm(a, ctx).algorithm, "direct");
}

// A reduce-scatter past the board's capacity goes in rounds too (each rank's post carries a piece
// of every block): with ranks sharing CPUs it wins (measured here, 8 ranks on 2 cores, 64 MiB:
// 1.6x the ring's busbw); at 2 ranks, one step either way, the ring keeps it.
TEST(CostModel, ManyRankReduceScattersOfAnySizeGoToTheBoards) {
  OpArgs a;
  a.kind = CollKind::kReduceScatter;
  a.dtype = bcclFloat32;
  a.op = bcclSum;
  a.count = (8 << 20) / 4;  // 8 MiB per rank: 256 rounds at 8 ranks
  EXPECT_EQ(chooseAlgorithm(a, boardContext(8, kEightRanks)).algorithm, "direct");
  EXPECT_NE(chooseAlgorithm(a, boardContext(2, kTwoRanks)).algorithm, "direct");
}

// A round must hold at least one element of every block; a board too small for that is no
// candidate (its rounds would move nothing, forever).
TEST(CostModel, NoBoardRoundsWhenABlockPieceWouldHoldNoElement) {
  SelectionContext ctx = boardContext(16, kEightRanks);
  ctx.boardBytes = 64;  // 4 bytes per block and round: not one double
  OpArgs a;
  a.kind = CollKind::kReduceScatter;
  a.dtype = bcclFloat64;
  a.op = bcclSum;
  a.count = 1000;
  EXPECT_NE(chooseAlgorithm(a, ctx).algorithm, "direct");
  ctx.forcedAlgorithms = "direct";
  EXPECT_NE(chooseAlgorithm(a, ctx).algorithm, "direct") << "not even when forced";
  a.dtype = bcclInt32;  // one element per block and round fits
  EXPECT_EQ(chooseAlgorithm(a, ctx).algorithm, "direct");
}

// An allreduce past the board's capacity goes in rounds (direct.cc: a reduce-scatter round, then
// an allgather round): each input byte read once, each output byte written once. At 2 ranks the
// ring's overlap wins while the output fits the cache share; past it direct writes around the
// cache (2 ranks, 256 MiB, measured here: 1.2-1.4x the ring's busbw out of place). With ranks
// sharing CPUs it wins from a few MiB (8 ranks, 8-32 MiB: 1.2-1.6x).
TEST(CostModel, LargeAllReducesGoToTheBoardsInRounds) {
  constexpr Calibration kTwoRanksToday{0.9, 5.0, 62.5, 0.5, 1};  // init, 2026-12-07: 2.4-5.6 GB/s
  SelectionContext two = boardContext(2, kTwoRanksToday);
  two.cacheBytesPerRank = 16 << 20;
  OpArgs a;
  a.kind = CollKind::kAllReduce;
  a.dtype = bcclFloat32;
  a.op = bcclSum;
  a.count = (4 << 20) / 4;
  EXPECT_NE(chooseAlgorithm(a, two).algorithm, "direct");
  a.count = (256 << 20) / 4;
  EXPECT_EQ(chooseAlgorithm(a, two).algorithm, "direct");
  two.cacheBytesPerRank = 0;  // unknown: never streamed, and the ring keeps it
  EXPECT_NE(chooseAlgorithm(a, two).algorithm, "direct");
  a.count = (8 << 20) / 4;
  EXPECT_EQ(chooseAlgorithm(a, boardContext(8, kEightRanks)).algorithm, "direct");
}

// Each round past the first costs one more synchronisation.
TEST(CostModel, ABoardAllGatherPaysASynchronisationPerRound) {
  const SelectionContext ctx = boardContext(8, kEightRanks);
  OpArgs a;
  a.kind = CollKind::kAllGather;
  a.dtype = bcclUint8;
  auto predictedDirect = [&](size_t bytes) {
    a.count = bytes;
    for (const auto& [algorithm, seconds] : chooseAlgorithm(a, ctx).predictions)
      if (algorithm == "direct") return seconds;
    return -1.0;
  };
  const double one = predictedDirect(ctx.boardBytes), two = predictedDirect(ctx.boardBytes + 1);
  ASSERT_GT(one, 0) << "direct is a candidate";
  EXPECT_GE(two - one, ctx.intraAlphaSeconds);
  EXPECT_LT(two - one, 2 * ctx.intraAlphaSeconds);
}

// An allreduce's round synchronises twice (its reduce-scatter half, then its allgather half);
// a post that fits the board is one synchronisation.
TEST(CostModel, ABoardAllReduceRoundPaysTwoSynchronisations) {
  const SelectionContext ctx = boardContext(8, kEightRanks);
  OpArgs a;
  a.kind = CollKind::kAllReduce;
  a.dtype = bcclFloat32;
  a.op = bcclSum;
  auto predictedDirect = [&](size_t bytes) {
    a.count = bytes / 4;
    for (const auto& [algorithm, seconds] : chooseAlgorithm(a, ctx).predictions)
      if (algorithm == "direct") return seconds;
    return -1.0;
  };
  const size_t round = ctx.boardBytes;  // 8 blocks of 32 KiB
  const double one = predictedDirect(2 * round), two = predictedDirect(2 * round + 4);
  ASSERT_GT(one, 0) << "direct is a candidate";
  EXPECT_GE(two - one, 2 * ctx.intraAlphaSeconds);
  EXPECT_LT(two - one, 3 * ctx.intraAlphaSeconds);
}

}  // namespace
}  // namespace bccl
