// Streams and groups through the public API: ordering of enqueued work, StreamQuery while work
// is genuinely pending, one stream carrying two communicators, and grouped send/recv patterns
// that deadlock unless the group launches them together. Each test builds its own small set of
// rank threads; these are few and cheap next to the matrix.
#include <bccl/bccl.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "support/data.h"
#include "support/thread_ranks.h"

namespace bccltest {
namespace {

class StreamsAndGroups : public ::testing::TestWithParam<std::string> {
 protected:
  ::testing::AssertionResult RunOn(int nranks, const std::string& label,
                                   const std::function<void(RankEnv&)>& fn, int commsPerRank = 1) {
    ThreadRanksOptions o = RanksOn(GetParam(), nranks);
    o.commsPerRank = commsPerRank;
    ThreadRanks ranks(o);
    if (!ranks.initError().empty()) {
      return ::testing::AssertionFailure() << "init: " << ranks.initError();
    }
    ::testing::AssertionResult res = ranks.Run(label, fn);
    ::testing::AssertionResult down = ranks.Shutdown();
    if (!res) return res;
    return down;
  }
};

void ExpectInts(RankEnv& e, const std::string& what, const std::vector<int32_t>& got,
                int32_t want) {
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want) {
      e.Fail(what + ": element " + std::to_string(i) + " is " + std::to_string(got[i]) + ", want " +
             std::to_string(want));
      return;
    }
  }
}

TEST_P(StreamsAndGroups, EmptyStreamIsIdle) {
  bcclStream_t s = nullptr;
  ASSERT_EQ(bcclStreamCreate(&s), bcclSuccess) << bcclGetLastError(nullptr);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(bcclStreamQuery(s), bcclSuccess);
  EXPECT_EQ(bcclStreamSynchronize(s), bcclSuccess);
  EXPECT_EQ(bcclStreamDestroy(s), bcclSuccess);
}

// Each op consumes the previous one's output, so running them out of order gives wrong sums.
TEST_P(StreamsAndGroups, EnqueuedOpsRunInOrder) {
  EXPECT_TRUE(RunOn(3, "ordered stream ops", [](RankEnv& e) {
    const int n = e.nranks;
    const size_t count = 4099;
    std::vector<int32_t> a(count, e.rank + 1), gathered(count * n), b(count, -1);
    bcclStream_t s = nullptr;
    if (!e.Ok(bcclStreamCreate(&s), "bcclStreamCreate")) return;
    e.Ok(bcclAllReduce(a.data(), a.data(), count, bcclInt32, bcclSum, e.comm, s), "AllReduce 1");
    e.Ok(bcclAllReduce(a.data(), a.data(), count, bcclInt32, bcclSum, e.comm, s), "AllReduce 2");
    e.Ok(bcclAllGather(a.data(), gathered.data(), count, bcclInt32, e.comm, s), "AllGather");
    if (e.rank == n - 1) b.assign(count, 77);
    e.Ok(bcclBroadcast(b.data(), b.data(), count, bcclInt32, n - 1, e.comm, s), "Broadcast");
    e.Ok(bcclBarrier(e.comm, s), "Barrier");
    const bcclResult_t q = bcclStreamQuery(s);
    if (q != bcclSuccess && q != bcclInProgress) {
      e.Fail("bcclStreamQuery returned " + std::to_string(q));
    }
    e.Ok(bcclStreamSynchronize(s), "bcclStreamSynchronize");
    if (bcclStreamQuery(s) != bcclSuccess) e.Fail("stream not idle after synchronize");
    e.Ok(bcclStreamDestroy(s), "bcclStreamDestroy");
    const int32_t once = n * (n + 1) / 2;
    ExpectInts(e, "twice-reduced", a, once * n);
    ExpectInts(e, "gathered", gathered, once * n);
    ExpectInts(e, "broadcast", b, 77);
  }));
}

// A recv whose sender is held back is pending for certain, so Query must say so.
TEST_P(StreamsAndGroups, QueryReportsPendingWork) {
  std::atomic<bool> release{false};
  EXPECT_TRUE(RunOn(2, "query while pending", [&](RankEnv& e) {
    const size_t count = 1000;
    std::vector<int32_t> buf(count, e.rank == 1 ? 42 : 0);
    if (e.rank == 1) {
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(15);
      while (!release.load() && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      e.Ok(bcclSend(buf.data(), count, bcclInt32, 0, e.comm, nullptr), "bcclSend");
      return;
    }
    bcclStream_t s = nullptr;
    if (!e.Ok(bcclStreamCreate(&s), "bcclStreamCreate")) {
      release = true;
      return;
    }
    e.Ok(bcclRecv(buf.data(), count, bcclInt32, 1, e.comm, s), "bcclRecv");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const bcclResult_t q = bcclStreamQuery(s);
    if (q != bcclInProgress) {
      e.Fail("bcclStreamQuery with a recv waiting on its sender returned " + std::to_string(q) +
             ", want bcclInProgress");
    }
    release = true;
    e.Ok(bcclStreamSynchronize(s), "bcclStreamSynchronize");
    if (bcclStreamQuery(s) != bcclSuccess) e.Fail("stream not idle after synchronize");
    e.Ok(bcclStreamDestroy(s), "bcclStreamDestroy");
    ExpectInts(e, "received", buf, 42);
  }));
}

TEST_P(StreamsAndGroups, OneStreamTwoCommunicators) {
  EXPECT_TRUE(RunOn(
      3, "two comms on one stream",
      [](RankEnv& e) {
        const int n = e.nranks;
        const size_t count = 10007;
        bcclComm_t c0 = e.comms[0], c1 = e.comms[1];
        int r0 = -1, r1 = -1;
        e.Ok(bcclCommUserRank(c0, &r0), "bcclCommUserRank");
        e.Ok(bcclCommUserRank(c1, &r1), "bcclCommUserRank");
        if (r0 != e.rank || r1 != e.rank) e.Fail("wrong rank on a communicator");
        std::vector<int32_t> a(count, e.rank), b(count, 10 * e.rank), g(count * n), bc(count, 0);
        if (e.rank == 0) bc.assign(count, 5);
        bcclStream_t s = nullptr;
        if (!e.Ok(bcclStreamCreate(&s), "bcclStreamCreate")) return;
        e.Ok(bcclAllReduce(a.data(), a.data(), count, bcclInt32, bcclSum, c0, s), "AllReduce c0");
        e.Ok(bcclAllReduce(b.data(), b.data(), count, bcclInt32, bcclMax, c1, s), "AllReduce c1");
        e.Ok(bcclAllGather(a.data(), g.data(), count, bcclInt32, c1, s), "AllGather c1");
        e.Ok(bcclBroadcast(bc.data(), bc.data(), count, bcclInt32, 0, c0, s), "Broadcast c0");
        e.Ok(bcclStreamSynchronize(s), "bcclStreamSynchronize");
        e.Ok(bcclStreamDestroy(s), "bcclStreamDestroy");
        ExpectInts(e, "sum on comm 0", a, n * (n - 1) / 2);
        ExpectInts(e, "max on comm 1", b, 10 * (n - 1));
        ExpectInts(e, "gather on comm 1", g, n * (n - 1) / 2);
        ExpectInts(e, "broadcast on comm 0", bc, 5);
      },
      2));
}

// Every rank sends 1 MiB to every other rank and receives as much from each, all at once:
// without grouping the blocking sends would wait on each other forever.
void AllPairs(RankEnv& e, bcclStream_t stream) {
  const int n = e.nranks;
  const size_t count = 1 << 18;
  std::vector<std::vector<float>> out(n), in(n);
  for (int p = 0; p < n; ++p) {
    out[p].assign(count, static_cast<float>(e.rank * 100 + p));
    in[p].assign(count, -1.0f);
  }
  if (!e.Ok(bcclGroupStart(), "bcclGroupStart")) return;
  for (int p = 0; p < n; ++p) {
    if (p == e.rank) continue;
    e.Ok(bcclSend(out[p].data(), count, bcclFloat32, p, e.comm, stream), "bcclSend");
    e.Ok(bcclRecv(in[p].data(), count, bcclFloat32, p, e.comm, stream), "bcclRecv");
  }
  if (!e.Ok(bcclGroupEnd(), "bcclGroupEnd")) return;
  if (stream && !e.Ok(bcclStreamSynchronize(stream), "bcclStreamSynchronize")) return;
  for (int p = 0; p < n; ++p) {
    if (p == e.rank) continue;
    const float want = static_cast<float>(p * 100 + e.rank);
    for (size_t i = 0; i < count; ++i) {
      if (in[p][i] != want) {
        e.Fail("from rank " + std::to_string(p) + " element " + std::to_string(i) + " is " +
               std::to_string(in[p][i]) + ", want " + std::to_string(want));
        break;
      }
    }
  }
}

TEST_P(StreamsAndGroups, GroupedAllPairsExchange) {
  EXPECT_TRUE(RunOn(4, "grouped all-pairs send/recv", [](RankEnv& e) {
    AllPairs(e, nullptr);
    bcclStream_t s = nullptr;
    if (!e.Ok(bcclStreamCreate(&s), "bcclStreamCreate")) return;
    AllPairs(e, s);
    e.Ok(bcclStreamDestroy(s), "bcclStreamDestroy");
  }));
}

TEST_P(StreamsAndGroups, GroupedSendToSelf) {
  EXPECT_TRUE(RunOn(2, "grouped send/recv to self", [](RankEnv& e) {
    std::vector<int32_t> out(5000, e.rank + 7), in(5000, 0);
    e.Ok(bcclGroupStart(), "bcclGroupStart");
    e.Ok(bcclSend(out.data(), out.size(), bcclInt32, e.rank, e.comm, nullptr), "bcclSend(self)");
    e.Ok(bcclRecv(in.data(), in.size(), bcclInt32, e.rank, e.comm, nullptr), "bcclRecv(self)");
    if (e.Ok(bcclGroupEnd(), "bcclGroupEnd")) ExpectInts(e, "from self", in, e.rank + 7);
  }));
}

// Only the outermost GroupEnd launches, so a send issued after the inner end still pairs up.
TEST_P(StreamsAndGroups, NestedGroups) {
  EXPECT_TRUE(RunOn(3, "nested groups", [](RankEnv& e) {
    const int next = (e.rank + 1) % e.nranks, prev = (e.rank + e.nranks - 1) % e.nranks;
    std::vector<int32_t> out(300000, e.rank), in(300000, -1);
    e.Ok(bcclGroupStart(), "bcclGroupStart outer");
    e.Ok(bcclGroupStart(), "bcclGroupStart inner");
    e.Ok(bcclSend(out.data(), out.size(), bcclInt32, next, e.comm, nullptr), "bcclSend");
    e.Ok(bcclGroupEnd(), "bcclGroupEnd inner");
    e.Ok(bcclRecv(in.data(), in.size(), bcclInt32, prev, e.comm, nullptr), "bcclRecv");
    if (e.Ok(bcclGroupEnd(), "bcclGroupEnd outer")) ExpectInts(e, "from prev", in, prev);
  }));
}

TEST_P(StreamsAndGroups, GroupedCollectives) {
  EXPECT_TRUE(RunOn(3, "collectives in one group", [](RankEnv& e) {
    const int n = e.nranks;
    std::vector<int32_t> a(1000, 1), b(2000, e.rank), c(3000, e.rank == 1 ? 9 : 0);
    e.Ok(bcclGroupStart(), "bcclGroupStart");
    e.Ok(bcclAllReduce(a.data(), a.data(), a.size(), bcclInt32, bcclSum, e.comm, nullptr), "AR");
    e.Ok(bcclAllReduce(b.data(), b.data(), b.size(), bcclInt32, bcclMax, e.comm, nullptr), "AR");
    e.Ok(bcclBroadcast(c.data(), c.data(), c.size(), bcclInt32, 1, e.comm, nullptr), "Bcast");
    if (!e.Ok(bcclGroupEnd(), "bcclGroupEnd")) return;
    ExpectInts(e, "sum", a, n);
    ExpectInts(e, "max", b, n - 1);
    ExpectInts(e, "broadcast", c, 9);
  }));
}

// Thousands of tiny ops shake out sequencing bugs (a reused slot, a stale flag) that one large
// op never hits, and a deep stream queue checks enqueue does not wait for execution.
TEST_P(StreamsAndGroups, ManySmallOps) {
  EXPECT_TRUE(RunOn(4, "many small allreduces", [](RankEnv& e) {
    const int n = e.nranks;
    for (int it = 0; it < 1000; ++it) {
      int32_t v = it + e.rank;
      if (!e.Ok(bcclAllReduce(&v, &v, 1, bcclInt32, bcclSum, e.comm, nullptr), "AllReduce")) {
        return;
      }
      if (v != n * it + n * (n - 1) / 2) {
        e.Fail("iteration " + std::to_string(it) + ": got " + std::to_string(v));
        return;
      }
    }
    constexpr int kQueued = 500;
    std::vector<int32_t> vals(kQueued);
    bcclStream_t s = nullptr;
    if (!e.Ok(bcclStreamCreate(&s), "bcclStreamCreate")) return;
    for (int it = 0; it < kQueued; ++it) {
      vals[it] = it * e.rank;
      e.Ok(bcclAllReduce(&vals[it], &vals[it], 1, bcclInt32, bcclSum, e.comm, s), "enqueue");
    }
    e.Ok(bcclStreamSynchronize(s), "bcclStreamSynchronize");
    e.Ok(bcclStreamDestroy(s), "bcclStreamDestroy");
    for (int it = 0; it < kQueued; ++it) {
      if (vals[it] != it * n * (n - 1) / 2) {
        e.Fail("queued op " + std::to_string(it) + ": got " + std::to_string(vals[it]));
        return;
      }
    }
  }));
}

INSTANTIATE_TEST_SUITE_P(Transports, StreamsAndGroups, ::testing::Values("shm", "tcp"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace bccltest
