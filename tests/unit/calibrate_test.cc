// Link costs measured at init: every rank must end up with identical costs (or ranks would
// choose different algorithms and deadlock), the measured values must be plausible, and
// BCCL_CALIBRATE=0 / split children must not measure.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "api/handles.h"
#include "bccl/bccl.h"

namespace {

struct Costs {
  double intraAlpha = 0, intraBps = 0, interAlpha = 0, interBps = 0, reduceBps = 0;
  std::string source;
  bool intraShared = false;
  double ranksPerCpu = 0;
};

Costs costsOf(bcclComm_t comm) {
  const bccl::SelectionContext& s = comm->impl->selection();
  return {s.intraAlphaSeconds,   s.intraBytesPerSecond,  s.interAlphaSeconds,
          s.interBytesPerSecond, s.reduceBytesPerSecond, s.source,
          s.intraRateShared,     s.ranksPerCpu};
}

// Creates an n-rank communicator (one thread per rank) and returns each rank's costs, and those
// of a child split from it.
void createAll(int n, const char* transports, std::vector<Costs>* costs,
               std::vector<Costs>* childCosts) {
  bcclUniqueId id;
  ASSERT_EQ(bcclGetUniqueId(&id), bcclSuccess);
  costs->assign(n, Costs{});
  childCosts->assign(n, Costs{});
  std::vector<int> ok(n, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      bcclConfig_t cfg = BCCL_CONFIG_INITIALIZER;
      cfg.transports = transports;
      cfg.timeoutMs = 20000;
      bcclComm_t comm = nullptr;
      if (bcclCommInitRankConfig(&comm, n, id, r, &cfg) != bcclSuccess) return;
      (*costs)[r] = costsOf(comm);
      bcclComm_t child = nullptr;
      if (bcclCommSplit(comm, 0, r, &child, nullptr) == bcclSuccess) {
        (*childCosts)[r] = costsOf(child);
        bcclCommDestroy(child);
      }
      ok[r] = bcclCommDestroy(comm) == bcclSuccess;
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) ASSERT_TRUE(ok[r]) << "rank " << r << " failed";
}

void expectIdentical(const std::vector<Costs>& c) {
  for (size_t r = 1; r < c.size(); ++r) {
    EXPECT_EQ(c[r].intraAlpha, c[0].intraAlpha) << "rank " << r;
    EXPECT_EQ(c[r].intraBps, c[0].intraBps) << "rank " << r;
    EXPECT_EQ(c[r].interAlpha, c[0].interAlpha) << "rank " << r;
    EXPECT_EQ(c[r].interBps, c[0].interBps) << "rank " << r;
    EXPECT_EQ(c[r].reduceBps, c[0].reduceBps) << "rank " << r;
    EXPECT_EQ(c[r].source, c[0].source) << "rank " << r;
  }
}

class Calibration : public ::testing::TestWithParam<const char*> {};

TEST_P(Calibration, EveryRankHoldsTheSameMeasuredCosts) {
  unsetenv("BCCL_CALIBRATE");
  std::vector<Costs> costs, child;
  createAll(3, GetParam(), &costs, &child);
  expectIdentical(costs);
  EXPECT_EQ(costs[0].source.rfind("measured at init", 0), 0u) << costs[0].source;
  // Plausible: a small exchange takes between 10 ns and 1 s; bandwidths above 1 MB/s.
  EXPECT_GT(costs[0].intraAlpha, 1e-8);
  EXPECT_LT(costs[0].intraAlpha, 1.0);
  EXPECT_GT(costs[0].intraBps, 1e6);
  EXPECT_GT(costs[0].reduceBps, 1e6);
  // A split child inherits the parent's costs instead of measuring again.
  expectIdentical(child);
  EXPECT_EQ(child[0].intraAlpha, costs[0].intraAlpha);
  EXPECT_EQ(child[0].source, costs[0].source);
}

TEST_P(Calibration, TurnedOffKeepsDefaults) {
  setenv("BCCL_CALIBRATE", "0", 1);
  std::vector<Costs> costs, child;
  createAll(2, GetParam(), &costs, &child);
  unsetenv("BCCL_CALIBRATE");
  expectIdentical(costs);
  EXPECT_EQ(costs[0].source.rfind("defaults", 0), 0u) << costs[0].source;
}

// Three ranks, calibrating, each reporting a topology of `pus` CPUs on one host (BCCL_TOPO_FILE).
void createOnCpus(int pus, const char* transports, std::vector<Costs>* costs,
                  std::vector<Costs>* childCosts) {
  const std::string path = "/tmp/bccl-calibrate-topo-" + std::to_string(getpid()) + ".json";
  std::ofstream(path) << "{\"host\": \"calibrate-test\", \"source\": \"test\", \"packages\": 1, "
                         "\"numa_nodes\": 1, \"cores\": "
                      << pus << ", \"pus\": " << pus << ", \"my_numa_node\": 0, \"nics\": []}";
  unsetenv("BCCL_CALIBRATE");
  setenv("BCCL_TOPO_FILE", path.c_str(), 1);
  createAll(3, transports, costs, childCosts);
  unsetenv("BCCL_TOPO_FILE");
  unlink(path.c_str());
}

// Ranks sharing CPUs time their pairs all at once, between barriers: the intra rate is then a
// share already, which the model must not divide again. Three ranks: the one without a partner
// must still take part in every barrier, or the others would wait for it until the timeout.
TEST_P(Calibration, RanksSharingCpusAreTimedTogether) {
  std::vector<Costs> costs, child;
  createOnCpus(1, GetParam(), &costs, &child);
  expectIdentical(costs);
  EXPECT_EQ(costs[0].ranksPerCpu, 3.0);
  EXPECT_TRUE(costs[0].intraShared);
  EXPECT_NE(costs[0].source.find("all at once"), std::string::npos) << costs[0].source;
  EXPECT_GT(costs[0].intraBps, 1e6);
  EXPECT_TRUE(child[0].intraShared);  // inherited with the rates it qualifies
}

TEST_P(Calibration, RanksWithACpuEachAreTimedAlone) {
  std::vector<Costs> costs, child;
  createOnCpus(64, GetParam(), &costs, &child);
  EXPECT_FALSE(costs[0].intraShared);
  EXPECT_EQ(costs[0].source.find("all at once"), std::string::npos) << costs[0].source;
}

INSTANTIATE_TEST_SUITE_P(Transports, Calibration, ::testing::Values("shm", "tcp"));

}  // namespace
