// Membership calls on healthy communicators (split, agree, shrink with nothing to exclude,
// revoke) and their argument checks, through the public header only. Recovery after real
// deaths lives in tests/fault/recovery_test.cc; these pin down the ordering, renumbering and
// independence rules the header states, which a fault alone never exercises.
#include <bccl/bccl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/expect.h"
#include "support/thread_ranks.h"

namespace bccltest {
namespace {

class Membership : public ::testing::TestWithParam<std::string> {
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

// Checks size and rank of `comm`, then that an allreduce and an allgather of the old ranks
// over it give `members` (old ranks in new-rank order).
void CheckMembers(RankEnv& e, bcclComm_t comm, const std::vector<int>& members,
                  const std::string& what) {
  int count = -1, rank = -1;
  if (!e.Ok(bcclCommCount(comm, &count), what + " bcclCommCount", comm) ||
      !e.Ok(bcclCommUserRank(comm, &rank), what + " bcclCommUserRank", comm)) {
    return;
  }
  int want = -1;
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i] == e.rank) want = static_cast<int>(i);
  }
  if (count != static_cast<int>(members.size()) || rank != want) {
    e.Fail(what + ": size " + std::to_string(count) + " rank " + std::to_string(rank) +
           ", want size " + std::to_string(members.size()) + " rank " + std::to_string(want));
    return;
  }
  int32_t sum = e.rank, expectSum = 0;
  for (int m : members) expectSum += m;
  std::vector<int32_t> gathered(members.size(), -1);
  const int32_t mine = e.rank;
  if (e.Ok(bcclAllReduce(&sum, &sum, 1, bcclInt32, bcclSum, comm, nullptr), what + " allreduce",
           comm) &&
      sum != expectSum) {
    e.Fail(what + ": allreduce gave " + std::to_string(sum));
  }
  if (e.Ok(bcclAllGather(&mine, gathered.data(), 1, bcclInt32, comm, nullptr), what + " allgather",
           comm)) {
    for (size_t i = 0; i < members.size(); ++i) {
      if (gathered[i] != members[i]) {
        e.Fail(what + ": new rank " + std::to_string(i) + " is old rank " +
               std::to_string(gathered[i]) + ", want " + std::to_string(members[i]));
      }
    }
  }
}

TEST_P(Membership, SplitOrdersByKeyThenOldRank) {
  EXPECT_TRUE(RunOn(5, "split", [](RankEnv& e) {
    // Evens {0,2,4} with keys 7,1,1 -> new order 2,4,0 (the tie goes to the lower old rank);
    // odds {1,3} with keys 5,-5 -> new order 3,1.
    const int keys[] = {7, 5, 1, -5, 1};
    bcclComm_t half = nullptr;
    if (e.Ok(bcclCommSplit(e.comm, e.rank % 2, keys[e.rank], &half, nullptr), "bcclCommSplit")) {
      CheckMembers(e, half, e.rank % 2 == 0 ? std::vector<int>{2, 4, 0} : std::vector<int>{3, 1},
                   "split by parity");
      e.Ok(bcclCommDestroy(half), "bcclCommDestroy(split)");
    }
    // The last rank opts out; the rest keep their order, with an explicit config this time.
    bcclConfig_t cfg = BCCL_CONFIG_INITIALIZER;
    cfg.timeoutMs = 20000;
    bcclComm_t rest = reinterpret_cast<bcclComm_t>(&cfg);  // must be overwritten with NULL
    const int color = e.rank == e.nranks - 1 ? BCCL_SPLIT_NOCOLOR : 0;
    if (!e.Ok(bcclCommSplit(e.comm, color, 0, &rest, &cfg), "bcclCommSplit(NOCOLOR)")) return;
    if (color == BCCL_SPLIT_NOCOLOR) {
      if (rest != nullptr) e.Fail("BCCL_SPLIT_NOCOLOR did not give a NULL communicator");
      return;
    }
    CheckMembers(e, rest, {0, 1, 2, 3}, "split without the last rank");
    e.Ok(bcclCommDestroy(rest), "bcclCommDestroy(split)");
  }));
}

TEST_P(Membership, AgreeIsALogicalAnd) {
  EXPECT_TRUE(RunOn(4, "agree", [](RankEnv& e) {
    int flag = e.rank != 2;
    if (e.Ok(bcclCommAgree(e.comm, &flag), "bcclCommAgree") && flag != 0) {
      e.Fail("one rank said 0 but the agreement is " + std::to_string(flag));
    }
    flag = 1;
    if (e.Ok(bcclCommAgree(e.comm, &flag), "bcclCommAgree") && flag != 1) {
      e.Fail("everyone said 1 but the agreement is " + std::to_string(flag));
    }
    int failed[4], count = -1;
    if (e.Ok(bcclCommGetFailedRanks(e.comm, failed, 4, &count), "bcclCommGetFailedRanks") &&
        count != 0) {
      e.Fail("a healthy communicator lists " + std::to_string(count) + " failed ranks");
    }
    CheckMembers(e, e.comm, {0, 1, 2, 3}, "the agreed communicator");
  }));
}

// "An empty list means the failed ranks we know of": with none, everyone stays, same order.
TEST_P(Membership, ShrinkWithNothingFailedKeepsEveryone) {
  EXPECT_TRUE(RunOn(3, "shrink of a healthy communicator", [](RankEnv& e) {
    bcclComm_t same = nullptr;
    if (!e.Ok(bcclCommShrink(e.comm, nullptr, 0, &same, nullptr, BCCL_SHRINK_DEFAULT),
              "bcclCommShrink")) {
      return;
    }
    CheckMembers(e, same, {0, 1, 2}, "shrunk communicator");
    e.Ok(bcclCommDestroy(same), "bcclCommDestroy(shrunk)");
  }));
}

// One rank revokes: every rank's operations on that communicator fail with bcclRemoteError,
// while a second communicator over the same ranks is untouched.
TEST_P(Membership, RevokeStopsOnlyThatCommunicator) {
  EXPECT_TRUE(RunOn(
      3, "revoke",
      [](RankEnv& e) {
        bcclComm_t doomed = e.comms[1];
        if (e.rank == 0) e.Ok(bcclCommRevoke(doomed), "bcclCommRevoke");
        float x = 1.0f;
        const auto t0 = std::chrono::steady_clock::now();
        const bcclResult_t res = bcclAllReduce(&x, &x, 1, bcclFloat32, bcclSum, doomed, nullptr);
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - t0)
                            .count();
        if (res != bcclRemoteError) {
          e.Fail("allreduce on the revoked communicator returned " + std::to_string(res) +
                 ", want bcclRemoteError");
        }
        if (ms > 5000) e.Fail("the revoked allreduce took " + std::to_string(ms) + " ms to fail");
        const char* msg = bcclGetLastError(doomed);
        if (msg == nullptr || *msg == '\0') e.Fail("no message on the revoked communicator");
        e.Ok(bcclCommAbort(doomed), "bcclCommAbort(revoked)");
        e.comms[1] = nullptr;
        CheckMembers(e, e.comms[0], {0, 1, 2}, "the other communicator");
      },
      2));
}

INSTANTIATE_TEST_SUITE_P(Transports, Membership, ::testing::Values("shm", "tcp"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(MembershipArguments, RejectedWithoutHarm) {
  bcclUniqueId id;
  ASSERT_EQ(bcclGetUniqueId(&id), bcclSuccess);
  bcclConfig_t good = BCCL_CONFIG_INITIALIZER;
  good.timeoutMs = 5000;
  bcclComm_t comm = nullptr;
  ASSERT_EQ(bcclCommInitRankConfig(&comm, 1, id, 0, &good), bcclSuccess);
  int ranks[4], count = -1, flag = 1;
  const int one = 1, minusOne = -1;
  bcclComm_t nc = nullptr;
  bcclConfig_t bad = good;
  bad.magic = 0;
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetFailedRanks(nullptr, ranks, 4, &count));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetFailedRanks(comm, ranks, 4, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetFailedRanks(comm, ranks, -1, &count));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommGetFailedRanks(comm, nullptr, 4, &count));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommRevoke(nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommAgree(nullptr, &flag));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommAgree(comm, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommShrink(nullptr, nullptr, 0, &nc, nullptr, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommShrink(comm, nullptr, 0, nullptr, nullptr, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommShrink(comm, nullptr, 1, &nc, nullptr, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommShrink(comm, &one, -1, &nc, nullptr, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommShrink(comm, &one, 1, &nc, nullptr, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommShrink(comm, &minusOne, 1, &nc, nullptr, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommShrink(comm, nullptr, 0, &nc, &bad, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommSplit(nullptr, 0, 0, &nc, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommSplit(comm, 0, 0, nullptr, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommSplit(comm, -5, 0, &nc, nullptr));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommSplit(comm, 0, 0, &nc, &bad));
  EXPECT_EQ(nc, nullptr) << "a rejected call handed out a communicator";

  // Nothing above may have hurt the communicator.
  ASSERT_EQ(bcclCommGetFailedRanks(comm, nullptr, 0, &count), bcclSuccess);
  EXPECT_EQ(count, 0);
  ASSERT_EQ(bcclCommAgree(comm, &flag), bcclSuccess) << bcclGetLastError(comm);
  EXPECT_EQ(flag, 1);
  for (int mode = 0; mode < 2; ++mode) {
    SCOPED_TRACE(mode == 0 ? "split" : "shrink");
    nc = nullptr;
    const bcclResult_t res = mode == 0 ? bcclCommSplit(comm, 3, 0, &nc, nullptr)
                                       : bcclCommShrink(comm, nullptr, 0, &nc, nullptr, 0);
    ASSERT_EQ(res, bcclSuccess) << bcclGetLastError(comm);
    ASSERT_NE(nc, nullptr);
    int size = 0;
    EXPECT_EQ(bcclCommCount(nc, &size), bcclSuccess);
    EXPECT_EQ(size, 1);
    EXPECT_EQ(bcclCommDestroy(nc), bcclSuccess);
  }
  bcclResult_t async = bcclUnhandledError;
  EXPECT_EQ(bcclCommGetAsyncError(comm, &async), bcclSuccess);
  EXPECT_EQ(async, bcclSuccess);
  EXPECT_EQ(bcclCommDestroy(comm), bcclSuccess);
}

}  // namespace
}  // namespace bccltest
