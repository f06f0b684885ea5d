// The process tier: ranks in separate forked processes. It checks what the threaded tiers
// cannot: collectives across real address spaces over shm and tcp, and that when a rank is
// SIGKILLed mid-collective the survivors' pending call fails within the configured timeout
// with an error naming the dead rank, instead of hanging. This executable must stay free of
// threads in the parent, so it never calls the library outside a forked child.
#include <bccl/bccl.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cctype>
#include <cstdlib>
#include <ostream>
#include <string>
#include <vector>

#include "support/data.h"
#include "support/process_ranks.h"

namespace bccltest {
namespace {

constexpr int kFailTimeoutMs = 5000;
// Allowed on top of the timeout for the survivors to notice and return: scheduling on a busy
// two-core machine, sanitizer overhead.
constexpr int64_t kSlackMs = 2500;

void ExpectBytes(ChildEnv& env, const std::string& what, const std::string& diff) {
  if (!diff.empty()) env.Fail(what + ": " + diff);
}

// A few collectives of different shapes, each checked bit for bit.
int CollectivesRank(ChildEnv& env, const std::string& transports) {
  bcclComm_t comm = nullptr;
  if (!env.Ok(env.InitComm(&comm, transports, 20000), "bcclCommInitRankConfig")) return 1;
  const int n = env.nranks, r = env.rank;
  const size_t big = 100003;

  GuardedBuffer in(bcclInt32, big), out(bcclInt32, big);
  FillReduceInput(bcclInt32, bcclSum, n, r, 0, big, in.data());
  if (env.Ok(bcclAllReduce(in.data(), out.data(), big, bcclInt32, bcclSum, comm, nullptr),
             "bcclAllReduce", comm)) {
    ExpectBytes(env, "AllReduce int32 sum",
                CompareElements(bcclInt32, out.data(),
                                ExpectedReduction(bcclInt32, bcclSum, n, big).data(), big));
  }

  const size_t rc = 1001;
  GuardedBuffer rsIn(bcclFloat64, rc * n), rsOut(bcclFloat64, rc);
  FillReduceInput(bcclFloat64, bcclMax, n, r, 0, rc * n, rsIn.data());
  if (env.Ok(bcclReduceScatter(rsIn.data(), rsOut.data(), rc, bcclFloat64, bcclMax, comm, nullptr),
             "bcclReduceScatter", comm)) {
    const auto want = ExpectedReduction(bcclFloat64, bcclMax, n, rc * n);
    ExpectBytes(env, "ReduceScatter float64 max",
                CompareElements(bcclFloat64, rsOut.data(), want.data() + r * rc * 8, rc, r * rc));
  }

  GuardedBuffer agIn(bcclFloat16, 7), agOut(bcclFloat16, 7 * n), block(bcclFloat16, 7);
  FillPattern(bcclFloat16, r, 7, agIn.data());
  if (env.Ok(bcclAllGather(agIn.data(), agOut.data(), 7, bcclFloat16, comm, nullptr),
             "bcclAllGather", comm)) {
    for (int s = 0; s < n; ++s) {
      FillPattern(bcclFloat16, s, 7, block.data());
      ExpectBytes(env, "AllGather block " + std::to_string(s),
                  CompareElements(bcclFloat16, agOut.at(7 * s), block.data(), 7));
    }
  }

  const size_t bc = 10007;
  GuardedBuffer bcast(bcclInt64, bc), bwant(bcclInt64, bc);
  FillPattern(bcclInt64, n - 1, bc, bwant.data());
  if (r == n - 1) FillPattern(bcclInt64, n - 1, bc, bcast.data());
  if (env.Ok(bcclBroadcast(bcast.data(), bcast.data(), bc, bcclInt64, n - 1, comm, nullptr),
             "bcclBroadcast", comm)) {
    ExpectBytes(env, "Broadcast int64", CompareElements(bcclInt64, bcast.data(), bwant.data(), bc));
  }

  const size_t sc = 4096;
  GuardedBuffer sIn(bcclUint8, sc), sOut(bcclUint8, sc), sWant(bcclUint8, sc);
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  FillPattern(bcclUint8, r, sc, sIn.data());
  FillPattern(bcclUint8, prev, sc, sWant.data());
  env.Ok(bcclGroupStart(), "bcclGroupStart");
  env.Ok(bcclSend(sIn.data(), sc, bcclUint8, next, comm, nullptr), "bcclSend", comm);
  env.Ok(bcclRecv(sOut.data(), sc, bcclUint8, prev, comm, nullptr), "bcclRecv", comm);
  if (env.Ok(bcclGroupEnd(), "bcclGroupEnd", comm)) {
    ExpectBytes(env, "ring send/recv", CompareElements(bcclUint8, sOut.data(), sWant.data(), sc));
  }

  const size_t ac = 333;
  GuardedBuffer aIn(bcclInt32, ac * n), aOut(bcclInt32, ac * n), aWant(bcclInt32, ac);
  for (int d = 0; d < n; ++d) FillPattern(bcclInt32, r * n + d, ac, aIn.at(d * ac));
  if (env.Ok(bcclAllToAll(aIn.data(), aOut.data(), ac, bcclInt32, comm, nullptr), "bcclAllToAll",
             comm)) {
    for (int s = 0; s < n; ++s) {
      FillPattern(bcclInt32, s * n + r, ac, aWant.data());
      ExpectBytes(env, "AllToAll block " + std::to_string(s),
                  CompareElements(bcclInt32, aOut.at(s * ac), aWant.data(), ac));
    }
  }
  env.Ok(bcclBarrier(comm, nullptr), "bcclBarrier", comm);
  for (const GuardedBuffer* b :
       {&in, &out, &rsIn, &rsOut, &agIn, &agOut, &bcast, &sIn, &sOut, &aIn, &aOut}) {
    const std::string g = b->CheckGuards();
    if (!g.empty()) env.Fail(g);
  }
  env.Ok(bcclCommDestroy(comm), "bcclCommDestroy");
  return env.failed() ? 1 : 0;
}

struct ShapeParam {
  std::string transports;  // "" = the library's default
  int nranks;
};

void PrintTo(const ShapeParam& p, std::ostream* os) {
  *os << (p.transports.empty() ? "default transports" : p.transports) << ", " << p.nranks
      << " ranks";
}

class ProcessCollectives : public ::testing::TestWithParam<ShapeParam> {};

TEST_P(ProcessCollectives, MatchReference) {
  const ShapeParam p = GetParam();
  ProcessRanks ranks(p.nranks, 120000);
  ASSERT_TRUE(ranks.Run([&](ChildEnv& env) { return CollectivesRank(env, p.transports); }))
      << ranks.error();
  EXPECT_TRUE(ranks.AllPassed()) << ranks.Summary();
}

INSTANTIATE_TEST_SUITE_P(Shapes, ProcessCollectives,
                         ::testing::Values(ShapeParam{"shm", 3}, ShapeParam{"tcp", 3},
                                           ShapeParam{"shm", 4}, ShapeParam{"tcp", 2},
                                           ShapeParam{"", 3}),
                         [](const ::testing::TestParamInfo<ShapeParam>& info) {
                           return (info.param.transports.empty() ? std::string("default")
                                                                 : info.param.transports) +
                                  "_n" + std::to_string(info.param.nranks);
                         });

}  // namespace
}  // namespace bccltest
