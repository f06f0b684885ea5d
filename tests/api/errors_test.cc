// Bad input through the public API. The header promises that no call aborts or raises, that
// every failure is a result code with a message from bcclGetLastError, and that waits end at
// the configured timeout; these tests hold the library to that for each kind of misuse,
// including a rendezvous nobody serves, which must fail in time rather than hang.
#include <bccl/bccl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/c_callers.h"
#include "support/expect.h"
#include "support/thread_ranks.h"

namespace bccltest {
namespace {

bcclConfig_t Config(int timeoutMs, const char* transports = "shm") {
  bcclConfig_t cfg = BCCL_CONFIG_INITIALIZER;
  cfg.timeoutMs = timeoutMs;
  cfg.transports = transports;
  return cfg;
}

bcclComm_t SoloComm() {
  bcclUniqueId id;
  if (bcclGetUniqueId(&id) != bcclSuccess) return nullptr;
  bcclConfig_t cfg = Config(5000);
  bcclComm_t comm = nullptr;
  if (bcclCommInitRankConfig(&comm, 1, id, 0, &cfg) != bcclSuccess) return nullptr;
  return comm;
}

TEST(Basics, VersionMatchesHeader) {
  int v = -1;
  ASSERT_EQ(bcclGetVersion(&v), bcclSuccess);
  EXPECT_EQ(v, BCCL_VERSION_CODE);
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclGetVersion(nullptr));
}

TEST(Basics, ErrorStringsAreDistinct) {
  std::set<std::string> seen;
  for (int c = 0; c < bcclNumResults; ++c) {
    const char* s = bcclGetErrorString(static_cast<bcclResult_t>(c));
    ASSERT_NE(s, nullptr) << "code " << c;
    EXPECT_STRNE(s, "") << "code " << c;
    EXPECT_TRUE(seen.insert(s).second) << "code " << c << " shares its string: " << s;
  }
  EXPECT_NE(bccltestErrorStringRaw(bcclNumResults), nullptr);
  EXPECT_NE(bccltestErrorStringRaw(99), nullptr);
  EXPECT_NE(bccltestErrorStringRaw(-1), nullptr);
}

TEST(Basics, LastErrorIsEmptyOnAFreshThread) {
  const char* msg = reinterpret_cast<const char*>(1);
  std::thread([&] { msg = bcclGetLastError(nullptr); }).join();
  ASSERT_NE(msg, nullptr);
  EXPECT_STREQ(msg, "");
}

TEST(Basics, NullCommunicator) {
  int x = 0, out = 0;
  bcclResult_t async = bcclSuccess;
  EXPECT_BCCL_FAIL(bcclInvalidArgument,
                   bcclAllReduce(&x, &out, 1, bcclInt32, bcclSum, nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclAllGather(&x, &out, 1, bcclInt32, nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument,
                   bcclReduceScatter(&x, &out, 1, bcclInt32, bcclSum, nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclBroadcast(&x, &out, 1, bcclInt32, 0, nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument,
                   bcclReduce(&x, &out, 1, bcclInt32, bcclSum, 0, nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclAllToAll(&x, &out, 1, bcclInt32, nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclSend(&x, 1, bcclInt32, 0, nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclRecv(&out, 1, bcclInt32, 0, nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclBarrier(nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommCount(nullptr, &out));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommUserRank(nullptr, &out));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetAsyncError(nullptr, &async));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclStreamCreate(nullptr));
}

TEST(Basics, GroupEndWithoutStartFails) {
  const bcclResult_t res = bcclGroupEnd();
  EXPECT_NE(res, bcclSuccess);
  EXPECT_STRNE(bcclGetLastError(nullptr), "");
}

// Misuse on a healthy one-rank communicator: each call fails alone and leaves it usable.
class SoloCommTest : public ::testing::Test {
 protected:
  void SetUp() override {
    comm_ = SoloComm();
    ASSERT_NE(comm_, nullptr) << "cannot create a 1-rank communicator: "
                              << bcclGetLastError(nullptr);
  }
  void TearDown() override {
    if (comm_ == nullptr) return;
    // A bad argument is the caller's fault, not the communicator's: no sticky error, still works.
    bcclResult_t async = bcclUnhandledError;
    EXPECT_EQ(bcclCommGetAsyncError(comm_, &async), bcclSuccess);
    EXPECT_EQ(async, bcclSuccess);
    int v = 5;
    EXPECT_EQ(bcclAllReduce(&v, &v, 1, bcclInt32, bcclSum, comm_, nullptr), bcclSuccess)
        << bcclGetLastError(comm_);
    EXPECT_EQ(v, 5);
    EXPECT_NE(bcclGetLastError(comm_), nullptr);
    EXPECT_EQ(bcclCommDestroy(comm_), bcclSuccess);
  }
  bcclComm_t comm_ = nullptr;
  int a_[8] = {0};
  int b_[8] = {0};
};

TEST_F(SoloCommTest, CountAndRank) {
  ASSERT_NE(bcclGetLastError(comm_), nullptr);
  EXPECT_STREQ(bcclGetLastError(comm_), "") << "a fresh communicator has no last error";
  int count = -1, rank = -1;
  EXPECT_EQ(bcclCommCount(comm_, &count), bcclSuccess);
  EXPECT_EQ(count, 1);
  EXPECT_EQ(bcclCommUserRank(comm_, &rank), bcclSuccess);
  EXPECT_EQ(rank, 0);
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommCount(comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommUserRank(comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetAsyncError(comm_, nullptr));
}

TEST_F(SoloCommTest, PeerTransport) {
  char buf[128] = "unset";
  EXPECT_EQ(bcclCommGetPeerTransport(comm_, 0, buf, sizeof buf), bcclSuccess);
  EXPECT_STREQ(buf, "self");
  char tiny[3] = {'x', 'x', 'x'};
  EXPECT_EQ(bcclCommGetPeerTransport(comm_, 0, tiny, sizeof tiny), bcclSuccess);
  EXPECT_STREQ(tiny, "se") << "truncated and terminated";
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetPeerTransport(comm_, 1, buf, sizeof buf));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetPeerTransport(comm_, -1, buf, sizeof buf));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetPeerTransport(comm_, 0, nullptr, 8));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetPeerTransport(comm_, 0, buf, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetPeerTransport(nullptr, 0, buf, sizeof buf));
}

TEST_F(SoloCommTest, NullBuffersWithElements) {
  const bcclDataType_t t = bcclInt32;
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclAllReduce(nullptr, b_, 1, t, bcclSum, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclAllReduce(a_, nullptr, 1, t, bcclSum, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclAllGather(nullptr, b_, 1, t, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclAllGather(a_, nullptr, 1, t, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument,
                   bcclReduceScatter(nullptr, b_, 1, t, bcclSum, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument,
                   bcclReduceScatter(a_, nullptr, 1, t, bcclSum, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclBroadcast(nullptr, b_, 1, t, 0, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclBroadcast(a_, nullptr, 1, t, 0, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclReduce(nullptr, b_, 1, t, bcclSum, 0, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclReduce(a_, nullptr, 1, t, bcclSum, 0, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclAllToAll(nullptr, b_, 1, t, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclAllToAll(a_, nullptr, 1, t, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclSend(nullptr, 1, t, 0, comm_, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclRecv(nullptr, 1, t, 0, comm_, nullptr));
}

TEST_F(SoloCommTest, NullBuffersWithZeroElementsAreFine) {
  const bcclDataType_t t = bcclFloat32;
  EXPECT_EQ(bcclAllReduce(nullptr, nullptr, 0, t, bcclSum, comm_, nullptr), bcclSuccess);
  EXPECT_EQ(bcclAllGather(nullptr, nullptr, 0, t, comm_, nullptr), bcclSuccess);
  EXPECT_EQ(bcclReduceScatter(nullptr, nullptr, 0, t, bcclSum, comm_, nullptr), bcclSuccess);
  EXPECT_EQ(bcclBroadcast(nullptr, nullptr, 0, t, 0, comm_, nullptr), bcclSuccess);
  EXPECT_EQ(bcclReduce(nullptr, nullptr, 0, t, bcclSum, 0, comm_, nullptr), bcclSuccess);
  EXPECT_EQ(bcclAllToAll(nullptr, nullptr, 0, t, comm_, nullptr), bcclSuccess);
  ASSERT_EQ(bcclGroupStart(), bcclSuccess);
  EXPECT_EQ(bcclSend(nullptr, 0, t, 0, comm_, nullptr), bcclSuccess);
  EXPECT_EQ(bcclRecv(nullptr, 0, t, 0, comm_, nullptr), bcclSuccess);
  EXPECT_EQ(bcclGroupEnd(), bcclSuccess) << bcclGetLastError(nullptr);
}

// Out-of-range enums come from C (see c_callers.h): legal there, undefined as a C++ cast.
TEST_F(SoloCommTest, DatatypeOutOfRange) {
  for (int raw : {42, static_cast<int>(bcclNumTypes), -1}) {
    for (int c = 0; c < bccltestNumCalls; ++c) {
      const auto call = static_cast<bccltestCall>(c);
      SCOPED_TRACE(std::string(bccltestCallName(call)) + " with datatype " + std::to_string(raw));
      EXPECT_BCCL_FAIL(bcclInvalidArgument, bccltestCallRaw(call, raw, bcclSum, a_, b_, 1, comm_));
    }
  }
}

TEST_F(SoloCommTest, OpOutOfRange) {
  for (int raw : {42, static_cast<int>(bcclNumOps), -1}) {
    for (bccltestCall call : {bccltestAllReduce, bccltestReduceScatter, bccltestReduce}) {
      SCOPED_TRACE(std::string(bccltestCallName(call)) + " with op " + std::to_string(raw));
      EXPECT_BCCL_FAIL(bcclInvalidArgument,
                       bccltestCallRaw(call, bcclInt32, raw, a_, b_, 1, comm_));
    }
  }
}

TEST_F(SoloCommTest, RootOrPeerOutOfRange) {
  for (int bad : {-1, 1}) {
    SCOPED_TRACE("root/peer " + std::to_string(bad));
    EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclBroadcast(a_, b_, 1, bcclInt32, bad, comm_, nullptr));
    EXPECT_BCCL_FAIL(bcclInvalidArgument,
                     bcclReduce(a_, b_, 1, bcclInt32, bcclSum, bad, comm_, nullptr));
    EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclSend(a_, 1, bcclInt32, bad, comm_, nullptr));
    EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclRecv(b_, 1, bcclInt32, bad, comm_, nullptr));
  }
}

TEST(MultiRank, CountRankAndRangeChecks) {
  ThreadRanks ranks(RanksOn("shm", 3));
  ASSERT_EQ(ranks.initError(), "");
  EXPECT_TRUE(ranks.Run("count/rank and out-of-range root/peer", [](RankEnv& e) {
    int count = -1, rank = -1;
    if (e.Ok(bcclCommCount(e.comm, &count), "bcclCommCount") && count != e.nranks) {
      e.Fail("bcclCommCount gave " + std::to_string(count));
    }
    if (e.Ok(bcclCommUserRank(e.comm, &rank), "bcclCommUserRank") && rank != e.rank) {
      e.Fail("bcclCommUserRank gave " + std::to_string(rank));
    }
    int a = 1, b = 0;
    for (int bad : {-1, e.nranks, e.nranks + 7}) {
      const std::string tag = " with root/peer " + std::to_string(bad);
      if (bcclBroadcast(&a, &b, 1, bcclInt32, bad, e.comm, nullptr) != bcclInvalidArgument) {
        e.Fail("bcclBroadcast" + tag + " did not return bcclInvalidArgument");
      }
      if (bcclReduce(&a, &b, 1, bcclInt32, bcclMax, bad, e.comm, nullptr) != bcclInvalidArgument) {
        e.Fail("bcclReduce" + tag + " did not return bcclInvalidArgument");
      }
      if (bcclSend(&a, 1, bcclInt32, bad, e.comm, nullptr) != bcclInvalidArgument) {
        e.Fail("bcclSend" + tag + " did not return bcclInvalidArgument");
      }
      if (bcclRecv(&b, 1, bcclInt32, bad, e.comm, nullptr) != bcclInvalidArgument) {
        e.Fail("bcclRecv" + tag + " did not return bcclInvalidArgument");
      }
      if (std::strlen(bcclGetLastError(nullptr)) == 0) e.Fail("no message" + tag);
    }
    char via[128] = "";
    const int next = (e.rank + 1) % e.nranks;
    if (e.Ok(bcclCommGetPeerTransport(e.comm, next, via, sizeof via), "bcclCommGetPeerTransport") &&
        std::string(via) != "shm") {
      e.Fail("rank " + std::to_string(next) + " is reached via '" + via + "', want shm");
    }
    // The communicator is still healthy after the rejected calls.
    if (e.Ok(bcclAllReduce(&a, &b, 1, bcclInt32, bcclSum, e.comm, nullptr), "bcclAllReduce") &&
        b != e.nranks) {
      e.Fail("sum after rejected calls is " + std::to_string(b));
    }
  }));
  EXPECT_TRUE(ranks.Shutdown());
}

TEST(MultiRank, AbortHealthyCommunicator) {
  bcclUniqueId id;
  ASSERT_EQ(bcclGetUniqueId(&id), bcclSuccess);
  bcclResult_t init[2] = {bcclInternalError, bcclInternalError};
  bcclResult_t abort[2] = {bcclInternalError, bcclInternalError};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      bcclConfig_t cfg = Config(10000);
      bcclComm_t comm = nullptr;
      init[r] = bcclCommInitRankConfig(&comm, 2, id, r, &cfg);
      if (init[r] == bcclSuccess) abort[r] = bcclCommAbort(comm);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(init[r], bcclSuccess) << "rank " << r;
    EXPECT_EQ(abort[r], bcclSuccess) << "rank " << r;
  }
  bcclComm_t solo = SoloComm();
  ASSERT_NE(solo, nullptr);
  EXPECT_EQ(bcclCommAbort(solo), bcclSuccess);
}

// Abort "stops every operation on the communicator, on any thread": a collective blocked on a
// peer that never comes, directly or through a stream, must return once another thread aborts,
// long before the communicator's 20 s timeout.
TEST(MultiRank, AbortUnblocksPendingOperations) {
  for (bool onStream : {false, true}) {
    SCOPED_TRACE(onStream ? "pending on a stream" : "blocking call");
    bcclUniqueId id;
    ASSERT_EQ(bcclGetUniqueId(&id), bcclSuccess);
    bcclComm_t comms[2] = {nullptr, nullptr};
    bcclResult_t init[2];
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        bcclConfig_t cfg = Config(20000);
        init[r] = bcclCommInitRankConfig(&comms[r], 2, id, r, &cfg);
      });
    }
    for (auto& t : threads) t.join();
    ASSERT_EQ(init[0], bcclSuccess);
    ASSERT_EQ(init[1], bcclSuccess);

    bcclStream_t stream = nullptr;
    if (onStream) {
      ASSERT_EQ(bcclStreamCreate(&stream), bcclSuccess);
    }
    std::vector<float> buf(1 << 16, 1.0f);
    bcclResult_t pending = bcclSuccess;
    double pendingMs = 0;
    // Rank 1 never joins, so rank 0's allreduce can only end by abort (or the 20 s timeout).
    std::thread blocked([&] {
      const auto t0 = std::chrono::steady_clock::now();
      pending =
          bcclAllReduce(buf.data(), buf.data(), buf.size(), bcclFloat32, bcclSum, comms[0], stream);
      if (pending == bcclSuccess && stream != nullptr) pending = bcclStreamSynchronize(stream);
      pendingMs =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const auto a0 = std::chrono::steady_clock::now();
    EXPECT_EQ(bcclCommAbort(comms[0]), bcclSuccess) << bcclGetLastError(nullptr);
    const double abortMs =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a0).count();
    blocked.join();
    EXPECT_NE(pending, bcclSuccess) << "an allreduce missing a rank succeeded";
    EXPECT_LT(pendingMs, 5000) << "the pending operation outlived the abort";
    EXPECT_LT(abortMs, 5000) << "abort blocked";
    if (stream != nullptr) {
      EXPECT_EQ(bcclStreamDestroy(stream), bcclSuccess);
    }
    EXPECT_EQ(bcclCommAbort(comms[1]), bcclSuccess);
  }
}

}  // namespace
}  // namespace bccltest
