// A rank dies by SIGKILL while its peers are inside a collective. The header promises every
// wait ends at the configured deadline and that bcclGetLastError says what went wrong; here the
// survivors' pending allreduce must fail within the timeout with a remote/timeout/system error
// whose message names the dead rank, and abort must then free the communicator without
// blocking. Runs in the forking executable: the parent kills, children report timestamps on
// the shared CLOCK_MONOTONIC so the parent can measure how long the survivors took.
#include <bccl/bccl.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cctype>
#include <cstdlib>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "support/process_ranks.h"
#ifdef BCCL_TEST_VERBS
#include "support/verbs_probe.h"
#endif

namespace bccltest {
namespace {

constexpr int kTimeoutMs = 5000;
// Scheduling noise on a busy two-core machine and sanitizer overhead, on top of the timeout.
constexpr int64_t kSlackMs = 2500;
constexpr int kSelfKillIteration = 5;

struct KillParam {
  std::string transports;
  int nranks;
  int victim;
  bool selfKill;  // the victim raises SIGKILL at an iteration instead of the parent killing it
  // Elements per allreduce: a few go over the shared-memory boards ("direct"), many over rings.
  size_t floats = 4096;
};

// "rank K" not followed by another digit, in any letter case.
bool NamesRank(const std::string& msg, int rank) {
  std::string lower;
  for (char c : msg) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const std::string needle = "rank " + std::to_string(rank);
  for (size_t at = lower.find(needle); at != std::string::npos; at = lower.find(needle, at + 1)) {
    const size_t end = at + needle.size();
    if (end == lower.size() || !std::isdigit(static_cast<unsigned char>(lower[end]))) return true;
  }
  return false;
}

void PrintTo(const KillParam& p, std::ostream* os) {
  *os << p.transports << ", " << p.nranks << " ranks, victim " << p.victim
      << (p.selfKill ? " kills itself" : " killed by the parent");
}

// A survivor keeps its failed communicator (and its process) until every survivor has seen the
// failure: one that exits early would be reported by the others as a second dead rank, and the
// test would measure its own teardown instead of the library's failure detection.
void WaitForRelease(ChildEnv& env) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  timespec limit{30, 0};
  if (sigtimedwait(&set, nullptr, &limit) != SIGUSR1) env.Report("note: never released");
}

// The header: once a rank dies, "every pending and future operation on the communicator
// returns bcclRemoteError naming it", the sticky error records it, and the failed-rank list
// holds exactly the victim (the other survivors are still alive, see WaitForRelease).
void CheckFailureReport(ChildEnv& env, bcclComm_t comm, bcclResult_t res, const std::string& text,
                        int victim) {
  const std::string dead = "rank " + std::to_string(victim);
  if (res != bcclRemoteError) {
    env.Fail("pending allreduce returned " + std::to_string(res) + " (" + bcclGetErrorString(res) +
             "), want bcclRemoteError");
  }
  if (!NamesRank(text, victim)) {
    env.Fail("bcclGetLastError(comm) does not name " + dead + ": '" + text + "'");
  }
  bcclResult_t async = bcclSuccess;
  if (bcclCommGetAsyncError(comm, &async) != bcclSuccess || async == bcclSuccess) {
    env.Fail("bcclCommGetAsyncError does not report the failure (got " + std::to_string(async) +
             ")");
  }
  int failed[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
  int count = -1;
  if (env.Ok(bcclCommGetFailedRanks(comm, failed, 8, &count), "bcclCommGetFailedRanks", comm) &&
      (count != 1 || failed[0] != victim)) {
    env.Fail("bcclCommGetFailedRanks gave " + std::to_string(count) + " ranks, first " +
             std::to_string(failed[0]) + "; want just " + std::to_string(victim));
  }
  float x = 1.0f;
  const int64_t t0 = ProcessRanks::NowNs();
  const bcclResult_t again = bcclAllReduce(&x, &x, 1, bcclFloat32, bcclSum, comm, nullptr);
  const int64_t ms = (ProcessRanks::NowNs() - t0) / 1000000;
  const char* msg = bcclGetLastError(comm);
  if (again != bcclRemoteError || !NamesRank(msg ? msg : "", victim) || ms > 2000) {
    env.Fail("an allreduce issued after the failure returned " + std::to_string(again) + " after " +
             std::to_string(ms) + " ms with '" + (msg ? msg : "(NULL)") +
             "'; want bcclRemoteError naming " + dead + " at once");
  }
}

int LoopUntilError(ChildEnv& env, const KillParam& p) {
  // Blocked before init so the library's threads inherit the mask and SIGUSR1 stays queued
  // for sigtimedwait.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, nullptr);
  bcclComm_t comm = nullptr;
  if (!env.Ok(env.InitComm(&comm, p.transports, kTimeoutMs), "bcclCommInitRankConfig")) return 1;
  std::vector<float> buf(p.floats, 1.0f);
  const int64_t giveUp = ProcessRanks::NowNs() + 60000000000LL;
  for (int it = 0;; ++it) {
    if (p.selfKill && env.rank == p.victim && it == kSelfKillIteration) {
      env.Report("dying " + std::to_string(ProcessRanks::NowNs()));
      raise(SIGKILL);
    }
    const int64_t t0 = ProcessRanks::NowNs();
    const bcclResult_t res =
        bcclAllReduce(buf.data(), buf.data(), buf.size(), bcclFloat32, bcclMax, comm, nullptr);
    const int64_t t1 = ProcessRanks::NowNs();
    if (it == 0) env.Report("loop");
    if (res == bcclSuccess) {
      if (t1 > giveUp) {
        env.Fail("allreduce still succeeding 60 s after the loop began; nobody died?");
        bcclCommAbort(comm);
        return 1;
      }
      continue;
    }
    const char* msg = bcclGetLastError(comm);
    const std::string text = msg ? msg : "(NULL)";
    std::ostringstream line;
    line << "error " << t1 << " " << static_cast<int>(res) << " iteration " << it << " call "
         << (t1 - t0) / 1000000 << " ms: " << text;
    env.Report(line.str());
    CheckFailureReport(env, comm, res, text, p.victim);
    env.Report("checked");
    WaitForRelease(env);
    const int64_t a0 = ProcessRanks::NowNs();
    const bcclResult_t ab = bcclCommAbort(comm);
    const int64_t abortMs = (ProcessRanks::NowNs() - a0) / 1000000;
    if (abortMs > 2000) env.Fail("bcclCommAbort blocked for " + std::to_string(abortMs) + " ms");
    if (ab != bcclSuccess) env.Report("note: bcclCommAbort returned " + std::to_string(ab));
    return env.failed() ? 1 : 0;
  }
}

class RankDeath : public ::testing::TestWithParam<KillParam> {};

TEST_P(RankDeath, SurvivorsFailInTime) {
  const KillParam p = GetParam();
#ifdef BCCL_TEST_VERBS
  if (p.transports == "verbs") BCCL_SKIP_UNLESS_VERBS();
#endif
  ProcessRanks ranks(p.nranks, 60000);
  int looping = 0, failed = 0;
  auto onLine = [&](ProcessRanks& pr, int rank, const std::string& line) {
    (void)rank;
    if (!p.selfKill && line == "loop" && ++looping == p.nranks) pr.Kill(p.victim, SIGKILL);
    // Released only once every survivor has checked its view of the failure: one leaving
    // earlier would show up in the others' failed-rank lists.
    if (line == "checked" && ++failed == p.nranks - 1) {
      for (int r = 0; r < p.nranks; ++r) {
        if (r != p.victim) pr.Kill(r, SIGUSR1);
      }
    }
  };
  ASSERT_TRUE(ranks.Run([&](ChildEnv& env) { return LoopUntilError(env, p); }, onLine))
      << ranks.error();
  ASSERT_FALSE(ranks.timedOut()) << "survivors hung" << ranks.Summary();

  int64_t deathNs = ranks.killTimeNs(p.victim);
  if (p.selfKill) {
    const auto dying = ranks.LinesWith(p.victim, "dying ");
    ASSERT_EQ(dying.size(), 1u) << "victim did not reach iteration " << kSelfKillIteration
                                << ranks.Summary();
    deathNs = std::strtoll(dying[0].c_str(), nullptr, 10);
  }
  ASSERT_GT(deathNs, 0) << "the victim was never killed" << ranks.Summary();
  const ChildResult& victim = ranks.results()[static_cast<size_t>(p.victim)];
  std::ostringstream problems;
  if (victim.termSignal != SIGKILL) problems << "\n  the victim did not die of SIGKILL";
  for (int r = 0; r < p.nranks; ++r) {
    if (r == p.victim) continue;
    const ChildResult& c = ranks.results()[static_cast<size_t>(r)];
    for (const auto& f : ranks.LinesWith(r, "FAIL ")) problems << "\n  rank " << r << ": " << f;
    if (!c.exited || c.exitCode != 0) problems << "\n  rank " << r << " did not exit cleanly";
    const auto errors = ranks.LinesWith(r, "error ");
    if (errors.size() != 1) {
      problems << "\n  rank " << r << " reported no failing collective";
      continue;
    }
    const int64_t latencyMs = (std::strtoll(errors[0].c_str(), nullptr, 10) - deathNs) / 1000000;
    if (latencyMs > kTimeoutMs + kSlackMs) {
      problems << "\n  rank " << r << " returned " << latencyMs << " ms after the death; the "
               << "timeout is " << kTimeoutMs << " ms";
    }
  }
  if (!problems.str().empty()) {
    ADD_FAILURE() << "victim rank " << p.victim << ":" << problems.str()
                  << "\nwhat each rank reported:" << ranks.Summary();
  }
}

std::vector<KillParam> KillParams() {
  std::vector<KillParam> out;
  for (const char* t : {"shm", "tcp"}) {
    out.push_back({t, 3, 1, false});  // the parent kills a middle rank
    out.push_back({t, 3, 2, true});   // the last rank kills itself at a known iteration
    out.push_back({t, 4, 0, false});  // the rank that served the rendezvous dies
  }
  out.push_back({"shm", 3, 1, false, 2});  // tiny: over the boards, killed by the parent
  out.push_back({"shm", 4, 3, true, 2});   // tiny: the last rank kills itself
#ifdef BCCL_TEST_VERBS
  out.push_back({"verbs", 3, 1, false});
  out.push_back({"verbs", 3, 2, true});
#endif
  return out;
}

INSTANTIATE_TEST_SUITE_P(Kill, RankDeath, ::testing::ValuesIn(KillParams()),
                         [](const ::testing::TestParamInfo<KillParam>& info) {
                           return info.param.transports + "_n" + std::to_string(info.param.nranks) +
                                  "_victim" + std::to_string(info.param.victim) +
                                  (info.param.selfKill ? "_self" : "_parent") +
                                  (info.param.floats < 16 ? "_tiny" : "");
                         });

}  // namespace
}  // namespace bccltest
