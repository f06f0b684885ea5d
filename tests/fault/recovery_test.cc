// Recovery after failures, with real processes and real signals: a rank is SIGKILLed at a
// random point inside a loop of mixed collectives of random sizes; every survivor must get an
// error naming it, shrink without it (rank 0 included among the possible victims), and run 100
// more collectives on the new communicator with checked results. Also: two ranks killed at once,
// a rank killed during the shrink itself, a stopped (SIGSTOP) rank reported as unresponsive while
// abort stays prompt, and split/agree on healthy communicators.
#include <bccl/bccl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "support/process_ranks.h"

namespace bccltest {
namespace {

constexpr int kTimeoutMs = 20000;

bool NamesRank(const std::string& msg, int rank) {
  const std::string needle = "rank " + std::to_string(rank);
  for (size_t at = msg.find(needle); at != std::string::npos; at = msg.find(needle, at + 1)) {
    size_t end = at + needle.size();
    if (end == msg.size() || !isdigit(static_cast<unsigned char>(msg[end]))) return true;
  }
  return false;
}

// One iteration of the workload: a collective picked and sized by (seed, iteration), checked.
bool MixedCollective(ChildEnv& env, bcclComm_t comm, int iter, uint32_t seed, std::string* err) {
  int n = 0, me = 0;
  bcclCommCount(comm, &n);
  bcclCommUserRank(comm, &me);
  std::mt19937 rng(seed * 7919u + static_cast<uint32_t>(iter));
  const size_t count = 1 + rng() % 20000;
  const int kind = static_cast<int>(rng() % 3);
  bcclResult_t res = bcclSuccess;
  if (kind == 0) {
    std::vector<int32_t> buf(count, me + 1);
    res = bcclAllReduce(buf.data(), buf.data(), count, bcclInt32, bcclSum, comm, nullptr);
    if (res == bcclSuccess)
      for (size_t i = 0; i < count; ++i)
        if (buf[i] != n * (n + 1) / 2) {
          *err = "allreduce wrong at " + std::to_string(i);
          return false;
        }
  } else if (kind == 1) {
    std::vector<float> mine(count, static_cast<float>(me)), all(count * n, -1.f);
    res = bcclAllGather(mine.data(), all.data(), count, bcclFloat32, comm, nullptr);
    if (res == bcclSuccess)
      for (size_t i = 0; i < all.size(); ++i)
        if (all[i] != static_cast<float>(i / count)) {
          *err = "allgather of " + std::to_string(count) + " on " + std::to_string(n) +
                 " ranks wrong at " + std::to_string(i) + ": " + std::to_string(all[i]) +
                 " (iteration " + std::to_string(iter) + ")";
          return false;
        }
  } else {
    std::vector<int64_t> buf(count, me == 0 ? 42 : 0);
    res = bcclBroadcast(buf.data(), buf.data(), count, bcclInt64, 0, comm, nullptr);
    if (res == bcclSuccess && buf[count - 1] != 42) {
      *err = "broadcast wrong";
      return false;
    }
  }
  if (res != bcclSuccess) {
    *err = std::string(bcclGetErrorString(res)) + ": " + bcclGetLastError(comm);
    return false;
  }
  (void)env;
  return true;
}

struct Scenario {
  std::string transports;
  int nranks;
  std::vector<int> victims;  // killed by the parent while the loop runs
  int dieInShrink;           // a survivor that dies instead of shrinking (-1: none)
};

// Children: loop until a collective fails; check the failure names a victim; shrink; run 100
// checked collectives on the new communicator.
int Survive(ChildEnv& env, const Scenario& s) {
  bcclComm_t comm = nullptr;
  if (!env.Ok(env.InitComm(&comm, s.transports, kTimeoutMs), "init")) return 1;
  env.Report("loop");
  std::string err;
  int iter = 0;
  for (; iter < 100000; ++iter)
    if (!MixedCollective(env, comm, iter, 12345u, &err)) break;
  // The first error may name any rank that died, the one dying in the shrink included: a peer
  // blocked on that rank can see its exit before the news of the first victim reaches it.
  bool named = s.dieInShrink >= 0 && NamesRank(err, s.dieInShrink);
  for (int v : s.victims) named = named || NamesRank(err, v);
  if (!named) env.Fail("error does not name a dead rank: " + err);
  if (env.rank == s.dieInShrink) raise(SIGKILL);
  bcclComm_t next = nullptr;
  if (!env.Ok(bcclCommShrink(comm, nullptr, 0, &next, nullptr, BCCL_SHRINK_ABORT), "shrink", comm))
    return 1;
  int n = 0;
  bcclCommCount(next, &n);
  const int expected = s.nranks - static_cast<int>(s.victims.size()) - (s.dieInShrink >= 0 ? 1 : 0);
  if (n != expected)
    env.Fail("new communicator has " + std::to_string(n) + " ranks, expected " +
             std::to_string(expected));
  // All 100 run even if something above failed: stopping early would fail the other survivors.
  for (int i = 0; i < 100; ++i)
    if (!MixedCollective(env, next, i, 777u, &err)) {
      env.Fail("after shrink, iteration " + std::to_string(i) + ": " + err);
      break;
    }
  int failedRanks[64], failedCount = 0;
  bcclCommGetFailedRanks(comm, failedRanks, 64, &failedCount);
  env.Report("failed " + std::to_string(failedCount));
  bcclCommDestroy(next);
  bcclCommAbort(comm);
  env.Report("done");
  return env.failed() ? 1 : 0;
}

void RunScenario(const Scenario& s, uint32_t seed) {
  ProcessRanks ranks(s.nranks, 120000);
  std::mt19937 rng(seed);
  int loopers = 0;
  const int killAfterMs = 20 + static_cast<int>(rng() % 200);
  ASSERT_TRUE(ranks.Run([&](ChildEnv& env) { return Survive(env, s); },
                        [&](ProcessRanks& pr, int, const std::string& line) {
                          if (line == "loop" && ++loopers == s.nranks) {
                            usleep(static_cast<useconds_t>(killAfterMs) * 1000);
                            for (int v : s.victims) pr.Kill(v, SIGKILL);
                          }
                        }))
      << ranks.error();
  ASSERT_FALSE(ranks.timedOut()) << ranks.Summary();
  std::set<int> dead(s.victims.begin(), s.victims.end());
  if (s.dieInShrink >= 0) dead.insert(s.dieInShrink);
  for (int r = 0; r < s.nranks; ++r) {
    const ChildResult& c = ranks.results()[static_cast<size_t>(r)];
    if (dead.count(r)) continue;
    EXPECT_TRUE(c.exited && c.exitCode == 0) << "survivor " << r << "\n" << ranks.Summary();
  }
}

TEST(Recovery, KillRandomRankThenShrink) {
  std::mt19937 rng(2024);
  for (const char* transports : {"shm", "tcp"})
    for (int n : {4, 8})
      for (int trial = 0; trial < 3; ++trial) {
        int victim = trial == 0 ? 0 : static_cast<int>(rng() % n);  // rank 0 always once
        SCOPED_TRACE(std::string(transports) + " n=" + std::to_string(n) + " victim " +
                     std::to_string(victim));
        RunScenario(Scenario{transports, n, {victim}, -1}, rng());
      }
}

TEST(Recovery, TwoRanksKilledAtOnce) {
  RunScenario(Scenario{"shm", 8, {0, 5}, -1}, 7);
  RunScenario(Scenario{"tcp", 4, {1, 2}, -1}, 8);
}

TEST(Recovery, RankKilledDuringShrink) {
  RunScenario(Scenario{"shm", 4, {2}, 0}, 9);
  RunScenario(Scenario{"tcp", 8, {3}, 4}, 10);
}

// A stopped rank: survivors see it unresponsive within the heartbeat timeout, and abort on a
// survivor returns promptly although the peer is stopped.
TEST(Recovery, StoppedRankIsReportedAndAbortIsPrompt) {
  setenv("BCCL_HEARTBEAT_TIMEOUT_MS", "600", 1);
  const int n = 4, victim = 2;
  ProcessRanks ranks(n, 60000);
  int loopers = 0;
  ASSERT_TRUE(ranks.Run(
      [&](ChildEnv& env) {
        bcclComm_t comm = nullptr;
        if (!env.Ok(env.InitComm(&comm, "shm", kTimeoutMs), "init")) return 1;
        env.Report("loop");
        std::string err;
        for (int i = 0; i < 1000000; ++i)
          if (!MixedCollective(env, comm, i, 99u, &err)) break;
        if (err.find("unresponsive") == std::string::npos || !NamesRank(err, victim))
          env.Fail("expected '" + std::to_string(victim) + " unresponsive', got: " + err);
        int64_t t0 = ProcessRanks::NowNs();
        bcclCommAbort(comm);
        int64_t ms = (ProcessRanks::NowNs() - t0) / 1000000;
        env.Report("abort_ms " + std::to_string(ms));
        if (ms > 2000) env.Fail("abort took " + std::to_string(ms) + " ms");
        return env.failed() ? 1 : 0;
      },
      [&](ProcessRanks& pr, int, const std::string& line) {
        if (line == "loop" && ++loopers == n) {
          usleep(100000);
          pr.Kill(victim, SIGSTOP);
        }
        // Once every survivor is done, the stopped rank is killed by the harness's cleanup.
        static int done = 0;
        if (line.rfind("abort_ms", 0) == 0 && ++done == n - 1) pr.Kill(victim, SIGKILL);
      }))
      << ranks.error();
  unsetenv("BCCL_HEARTBEAT_TIMEOUT_MS");
  ASSERT_FALSE(ranks.timedOut()) << ranks.Summary();
  for (int r = 0; r < n; ++r) {
    if (r == victim) continue;
    EXPECT_TRUE(ranks.results()[r].exited && ranks.results()[r].exitCode == 0) << ranks.Summary();
  }
}

// Rank 0 destroys its communicator and exits (a clean exit, so nobody counts it failed) while
// the others wait; being the lowest rank, it is every survivor's first pick as the shrink's
// coordinator. With `forkHoldsPort`, rank 0 first forks a child that outlives it holding copies
// of its sockets, as a data-loader worker forked after init would: the survivors' connections
// are then queued by a listener nobody serves, instead of refused.
void ShrinkAfterRankZeroLeaves(bool forkHoldsPort) {
  const int n = 4;
  ProcessRanks ranks(n, 60000);
  int shrunk = 0;
  pid_t holder = -1;
  ASSERT_TRUE(ranks.Run(
      [&](ChildEnv& env) {
        bcclComm_t comm = nullptr;
        if (!env.Ok(env.InitComm(&comm, "", kTimeoutMs), "init")) return 1;
        int32_t v = 1;
        if (!env.Ok(bcclAllReduce(&v, &v, 1, bcclInt32, bcclSum, comm, nullptr), "allreduce", comm))
          return 1;
        if (env.rank == 0) {
          if (forkHoldsPort) {
            pid_t child = fork();
            if (child == 0) {
              for (int i = 0; i < 600; ++i) usleep(50000);  // killed by the harness before
              _exit(0);
            }
            env.Report("holder " + std::to_string(child));
          }
          bcclCommDestroy(comm);
          return 0;
        }
        usleep(500000);  // rank 0 is gone by now
        const int64_t t0 = ProcessRanks::NowNs();
        bcclComm_t next = nullptr;
        if (!env.Ok(bcclCommShrink(comm, nullptr, 0, &next, nullptr, BCCL_SHRINK_DEFAULT), "shrink",
                    comm))
          return 1;
        env.Report("shrink_ms " + std::to_string((ProcessRanks::NowNs() - t0) / 1000000));
        int nn = 0, failed[4], failedCount = 0;
        bcclCommCount(next, &nn);
        if (nn != n - 1) env.Fail("new communicator has " + std::to_string(nn) + " ranks");
        bcclCommGetFailedRanks(comm, failed, 4, &failedCount);
        if (failedCount != 1 || failed[0] != 0)
          env.Fail("failed ranks: expected just rank 0, got " + std::to_string(failedCount));
        v = 1;
        if (env.Ok(bcclAllReduce(&v, &v, 1, bcclInt32, bcclSum, next, nullptr), "allreduce",
                   next) &&
            v != n - 1)
          env.Fail("allreduce on the shrunk communicator gave " + std::to_string(v));
        bcclCommDestroy(next);
        bcclCommDestroy(comm);
        return env.failed() ? 1 : 0;
      },
      [&](ProcessRanks&, int, const std::string& line) {
        if (line.rfind("holder ", 0) == 0) holder = static_cast<pid_t>(std::stoi(line.substr(7)));
        // The holder keeps the port until every survivor has shrunk past rank 0.
        if (line.rfind("shrink_ms", 0) == 0 && ++shrunk == n - 1 && holder > 0)
          kill(holder, SIGKILL);
      }))
      << ranks.error();
  if (holder > 0) kill(holder, SIGKILL);
  EXPECT_EQ(shrunk, n - 1) << ranks.Summary();
  EXPECT_TRUE(ranks.AllPassed()) << ranks.Summary();
}

// Rank 0's port refuses: the survivors must take that as its departure and move on, not retry
// until the deadline.
TEST(Membership, ShrinkPassesOverACoordinatorThatAlreadyLeft) { ShrinkAfterRankZeroLeaves(false); }

// Rank 0's port still accepts, in its forked child: the survivors must see that its process is
// gone rather than wait for an answer until the deadline.
TEST(Membership, ShrinkPassesOverACoordinatorWhoseForkHoldsItsPort) {
  ShrinkAfterRankZeroLeaves(true);
}

TEST(Membership, SplitAndAgreeOnHealthyCommunicator) {
  const int n = 5;
  ProcessRanks ranks(n, 60000);
  ASSERT_TRUE(ranks.Run([&](ChildEnv& env) {
    bcclComm_t comm = nullptr;
    if (!env.Ok(env.InitComm(&comm, "", kTimeoutMs), "init")) return 1;
    // Split by parity, reversed order within each half; rank 4 takes no part.
    const int color = env.rank == 4 ? BCCL_SPLIT_NOCOLOR : env.rank % 2;
    bcclComm_t half = nullptr;
    if (!env.Ok(bcclCommSplit(comm, color, -env.rank, &half, nullptr), "split", comm)) return 1;
    if (env.rank == 4) {
      if (half != nullptr) env.Fail("NOCOLOR rank got a communicator");
    } else {
      int hn = 0, hr = 0;
      bcclCommCount(half, &hn);
      bcclCommUserRank(half, &hr);
      const int expectN = 2, expectR = env.rank < 2 ? 1 : 0;  // ranks {0,2} and {1,3}, reversed
      if (hn != expectN || hr != expectR)
        env.Fail("split gave rank " + std::to_string(hr) + "/" + std::to_string(hn));
      int32_t v = env.rank;
      if (env.Ok(bcclAllReduce(&v, &v, 1, bcclInt32, bcclSum, half, nullptr), "allreduce", half) &&
          v != (env.rank % 2 == 0 ? 2 : 4))
        env.Fail("allreduce in split communicator gave " + std::to_string(v));
      bcclCommDestroy(half);
    }
    int flag = env.rank == 3 ? 0 : 1;
    if (env.Ok(bcclCommAgree(comm, &flag), "agree", comm) && flag != 0)
      env.Fail("agree did not AND the flags");
    flag = 1;
    if (env.Ok(bcclCommAgree(comm, &flag), "agree", comm) && flag != 1)
      env.Fail("agree of all ones gave 0");
    int count = -1;
    bcclCommGetFailedRanks(comm, nullptr, 0, &count);
    if (count != 0) env.Fail("healthy communicator reports failed ranks");
    bcclCommDestroy(comm);
    return env.failed() ? 1 : 0;
  })) << ranks.error();
  EXPECT_TRUE(ranks.AllPassed()) << ranks.Summary();
}

}  // namespace
}  // namespace bccltest
