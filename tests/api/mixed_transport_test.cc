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

namespace bccltest {
namespace {

#ifdef BCCL_TEST_UCX
const char* kNetwork = "ucx";
#else
const char* kNetwork = "tcp";
#endif

TEST(MixedTransports, ShmWithinHostsNetworkBetween) {
  const int n = 4;
  ProcessRanks ranks(n, 120000);
  ASSERT_TRUE(ranks.Run([&](ChildEnv& env) {
    setenv("BCCL_HOST_ID", env.rank < 2 ? "mixed-host-a" : "mixed-host-b", 1);
    bcclComm_t comm = nullptr;
    if (!env.Ok(env.InitComm(&comm, std::string("shm,") + kNetwork, 30000), "init")) return 1;
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

}  // namespace
}  // namespace bccltest
