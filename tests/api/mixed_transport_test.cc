// One communicator, two kinds of links: ranks feigned as several hosts (BCCL_HOST_ID), so ranks
// of a host talk over shared memory and the hosts over the network transport (ucx when built,
// else tcp). Results must be exact whatever mix of transports carries them, with the algorithm
// the cost model picks and with the hierarchical one forced. Real processes: the host identity
// is per process.
#include <bccl/bccl.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "support/process_ranks.h"
#ifdef BCCL_TEST_VERBS
#include "support/verbs_probe.h"
#endif

namespace bccltest {
namespace {

#ifdef BCCL_TEST_UCX
const char* kNetwork = "ucx";
#else
const char* kNetwork = "tcp";
#endif

struct Layout {
  int nranks;
  int hosts;
  bool interleaved;  // host of rank r: r % hosts (else r / (nranks / hosts))
  const char* algo;  // BCCL_ALGO, "" for the cost model
  const char* network;
};

void PrintTo(const Layout& l, std::ostream* os) {
  *os << l.nranks << " ranks as " << l.hosts << " hosts" << (l.interleaved ? " interleaved" : "")
      << " algo '" << l.algo << "' over " << l.network;
}

void RunMixed(const Layout& layout) {
  const int n = layout.nranks;
  auto hostOf = [&](int r) {
    return layout.interleaved ? r % layout.hosts : r / (n / layout.hosts);
  };
  ProcessRanks ranks(n, 120000);
  ASSERT_TRUE(ranks.Run([&](ChildEnv& env) {
    setenv("BCCL_HOST_ID", ("mixed-host-" + std::to_string(hostOf(env.rank))).c_str(), 1);
    if (*layout.algo != 0) setenv("BCCL_ALGO", layout.algo, 1);
    bcclComm_t comm = nullptr;
    const std::string network = layout.network;
    if (!env.Ok(env.InitComm(&comm, "shm," + network, 30000), "init")) return 1;
    // Every peer is reached over shm on its own host and over the network transport elsewhere.
    for (int peer = 0; peer < n; ++peer) {
      if (peer == env.rank) continue;
      char via[256] = "";
      if (!env.Ok(bcclCommGetPeerTransport(comm, peer, via, sizeof via), "peer transport", comm))
        continue;
      const std::string want = hostOf(peer) == hostOf(env.rank) ? "shm" : network;
      if (std::string(via).rfind(want, 0) != 0)
        env.Fail("rank " + std::to_string(peer) + " is reached via '" + via + "', want " + want);
    }
    for (size_t count : {1ul, 7ul, 100003ul, 1ul << 20}) {
      std::vector<int32_t> buf(count);
      for (size_t i = 0; i < count; ++i) buf[i] = static_cast<int32_t>(i % 1000) + env.rank;
      if (!env.Ok(bcclAllReduce(buf.data(), buf.data(), count, bcclInt32, bcclSum, comm, nullptr),
                  "allreduce", comm))
        return 1;
      for (size_t i = 0; i < count; ++i)
        if (buf[i] != n * static_cast<int32_t>(i % 1000) + n * (n - 1) / 2) {
          env.Fail("allreduce count " + std::to_string(count) + " wrong at " + std::to_string(i));
          break;
        }
      std::vector<float> mine(count, static_cast<float>(env.rank)), all(count * n, -1.f);
      if (!env.Ok(bcclAllGather(mine.data(), all.data(), count, bcclFloat32, comm, nullptr),
                  "allgather", comm))
        return 1;
      for (size_t i = 0; i < all.size(); ++i)
        if (all[i] != static_cast<float>(i / count)) {
          env.Fail("allgather count " + std::to_string(count) + " wrong at " + std::to_string(i));
          break;
        }
    }
    bcclCommDestroy(comm);
    return env.failed() ? 1 : 0;
  })) << ranks.error();
  EXPECT_TRUE(ranks.AllPassed()) << ranks.Summary();
}

class MixedTransports : public ::testing::TestWithParam<Layout> {};

TEST_P(MixedTransports, ShmWithinHostsNetworkBetween) { RunMixed(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Layouts, MixedTransports,
                         ::testing::Values(Layout{4, 2, false, "", kNetwork},
                                           Layout{8, 2, false, "hier", "tcp"},
                                           Layout{8, 4, true, "hier", "tcp"},
                                           Layout{8, 4, false, "", "tcp"}),
                         [](const ::testing::TestParamInfo<Layout>& info) {
                           const Layout& l = info.param;
                           return "n" + std::to_string(l.nranks) + "_hosts" +
                                  std::to_string(l.hosts) + (l.interleaved ? "_interleaved" : "") +
                                  "_" + (*l.algo ? l.algo : "model") + "_" + l.network;
                         });

#ifdef BCCL_TEST_VERBS
TEST(MixedTransports, ShmWithinHostsVerbsBetween) {
  BCCL_SKIP_UNLESS_VERBS();
  RunMixed(Layout{4, 2, false, "", "verbs"});
}
#endif

// With no transport list, verbs is chosen between hosts only for hardware RDMA ports: here
// there is none (no device, or soft-RoCE in the test VM), so the hosts talk TCP.
TEST(MixedTransports, DefaultBetweenHostsIsTcpWithoutHardwareRdma) {
  ProcessRanks ranks(2, 60000);
  ASSERT_TRUE(ranks.Run([&](ChildEnv& env) {
    setenv("BCCL_HOST_ID", env.rank == 0 ? "default-host-a" : "default-host-b", 1);
    bcclComm_t comm = nullptr;
    if (!env.Ok(env.InitComm(&comm, "", 30000), "init")) return 1;
    char via[256] = "";
    if (env.Ok(bcclCommGetPeerTransport(comm, 1 - env.rank, via, sizeof via), "peer", comm) &&
        std::string(via) != "tcp")
      env.Fail(std::string("the other host is reached via '") + via + "', want tcp");
    int x = env.rank + 1;
    if (env.Ok(bcclAllReduce(&x, &x, 1, bcclInt32, bcclSum, comm, nullptr), "allreduce", comm) &&
        x != 3)
      env.Fail("allreduce gave " + std::to_string(x));
    bcclCommDestroy(comm);
    return env.failed() ? 1 : 0;
  })) << ranks.error();
  EXPECT_TRUE(ranks.AllPassed()) << ranks.Summary();
}

}  // namespace
}  // namespace bccltest
