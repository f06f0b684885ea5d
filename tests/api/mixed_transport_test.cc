// One communicator, two kinds of links: 4 ranks feigned as 2 hosts (BCCL_HOST_ID), so ranks of a
// host talk over shared memory and the hosts over the network transport (ucx when built, else
// tcp). Results must be exact whatever mix of transports carries them. Real processes: the host
// identity is per process.
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

void RunMixed(const std::string& network) {
  const int n = 4;
  ProcessRanks ranks(n, 120000);
  ASSERT_TRUE(ranks.Run([&](ChildEnv& env) {
    setenv("BCCL_HOST_ID", env.rank < 2 ? "mixed-host-a" : "mixed-host-b", 1);
    bcclComm_t comm = nullptr;
    if (!env.Ok(env.InitComm(&comm, "shm," + network, 30000), "init")) return 1;
    const int other = (env.rank + 2) % n, mate = env.rank ^ 1;
    char via[256] = "";
    if (env.Ok(bcclCommGetPeerTransport(comm, other, via, sizeof via), "peer transport", comm) &&
        std::string(via).rfind(network, 0) != 0)
      env.Fail("rank " + std::to_string(other) + " (other host) is reached via '" + via +
               "', want " + network);
    if (env.Ok(bcclCommGetPeerTransport(comm, mate, via, sizeof via), "peer transport", comm) &&
        std::string(via) != "shm")
      env.Fail("rank " + std::to_string(mate) + " (same host) is reached via '" + via + "'");
    for (size_t count : {1ul, 7ul, 100003ul, 1ul << 20}) {
      std::vector<int32_t> buf(count);
      for (size_t i = 0; i < count; ++i) buf[i] = static_cast<int32_t>(i % 1000) + env.rank;
      if (!env.Ok(bcclAllReduce(buf.data(), buf.data(), count, bcclInt32, bcclSum, comm, nullptr),
                  "allreduce", comm))
        return 1;
      for (size_t i = 0; i < count; ++i)
        if (buf[i] != 4 * static_cast<int32_t>(i % 1000) + 6) {
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

TEST(MixedTransports, ShmWithinHostsNetworkBetween) { RunMixed(kNetwork); }

#ifdef BCCL_TEST_VERBS
TEST(MixedTransports, ShmWithinHostsVerbsBetween) {
  BCCL_SKIP_UNLESS_VERBS();
  RunMixed("verbs");
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
