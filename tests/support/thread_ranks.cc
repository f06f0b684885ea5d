// Rank threads for the in-process tier. Each rank keeps its thread for the life of the set so
// communicators are created once and used from the thread that created them, as an
// application with one thread per rank would.
#include "support/thread_ranks.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>

namespace bccltest {
namespace {

constexpr size_t kMaxMessagesPerRank = 8;

std::string Describe(bcclResult_t res, bcclComm_t comm) {
  std::ostringstream os;
  const char* str = bcclGetErrorString(res);
  os << "result " << static_cast<int>(res) << " (" << (str ? str : "NULL error string") << ")";
  const char* thread = bcclGetLastError(nullptr);
  os << ", last error on thread: '" << (thread ? thread : "NULL") << "'";
  if (comm != nullptr) {
    const char* onComm = bcclGetLastError(comm);
    os << ", on comm: '" << (onComm ? onComm : "NULL") << "'";
  }
  return os.str();
}

}  // namespace

void RankEnv::Fail(const std::string& msg) {
  if (errors_.size() < kMaxMessagesPerRank) errors_.push_back(msg);
  ++failures_;
}

bool RankEnv::Ok(bcclResult_t res, const std::string& what, bcclComm_t errComm) {
  if (res == bcclSuccess) return true;
  libraryError_ = true;
  Fail(what + " failed: " + Describe(res, errComm != nullptr ? errComm : comm));
  return false;
}

ThreadRanksOptions RanksOn(const std::string& transports, int nranks, int timeoutMs) {
  ThreadRanksOptions o;
  o.transports = transports;
  o.nranks = nranks;
  o.timeoutMs = timeoutMs;
  return o;
}

ThreadRanks::ThreadRanks(const ThreadRanksOptions& opts) : opts_(opts) {
  const int n = opts_.nranks;
  envs_.resize(static_cast<size_t>(n));
  rankDone_.assign(static_cast<size_t>(n), false);
  ids_.resize(static_cast<size_t>(opts_.commsPerRank));
  for (auto& id : ids_) {
    bcclResult_t res = bcclGetUniqueId(&id);
    if (res != bcclSuccess) {
      initError_ = "bcclGetUniqueId failed: " + Describe(res, nullptr);
      shutDown_ = true;
      return;
    }
  }
  for (int r = 0; r < n; ++r) threads_.emplace_back(&ThreadRanks::Worker, this, r);
  std::unique_lock<std::mutex> lock(mu_);
  WaitAll(lock, "communicator init", [&] { return inited_ == n; });
  for (int r = 0; r < n; ++r) {
    const RankEnv& env = envs_[static_cast<size_t>(r)];
    for (const auto& e : env.errors_) initError_ += "\n  rank " + std::to_string(r) + ": " + e;
  }
}

ThreadRanks::~ThreadRanks() {
  if (shutDown_) return;
  ::testing::AssertionResult res = Shutdown();
  if (!res) std::fprintf(stderr, "bccl test: shutdown of rank threads: %s\n", res.message());
}

void ThreadRanks::WaitAll(std::unique_lock<std::mutex>& lock, const std::string& label,
                          const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(opts_.hangSeconds);
  if (cv_.wait_until(lock, deadline, done)) return;
  std::string stuck;
  for (int r = 0; r < opts_.nranks; ++r) {
    if (!rankDone_[static_cast<size_t>(r)]) stuck += " " + std::to_string(r);
  }
  std::fprintf(stderr,
               "bccl test: '%s' (%d ranks, transports '%s') still running after %d s; ranks not "
               "done:%s. A library call hung past its configured timeout of %d ms: aborting.\n",
               label.c_str(), opts_.nranks, opts_.transports.c_str(), opts_.hangSeconds,
               stuck.c_str(), opts_.timeoutMs);
  std::fflush(stderr);
  std::abort();
}

void ThreadRanks::Worker(int rank) {
  RankEnv& env = envs_[static_cast<size_t>(rank)];
  env.rank = rank;
  env.nranks = opts_.nranks;
  for (int c = 0; c < opts_.commsPerRank; ++c) {
    bcclConfig_t cfg = BCCL_CONFIG_INITIALIZER;
    cfg.timeoutMs = opts_.timeoutMs;
    cfg.transports = opts_.transports.empty() ? nullptr : opts_.transports.c_str();
    bcclComm_t comm = nullptr;
    bcclResult_t res =
        bcclCommInitRankConfig(&comm, opts_.nranks, ids_[static_cast<size_t>(c)], rank, &cfg);
    if (res != bcclSuccess) {
      env.Fail("bcclCommInitRankConfig (comm " + std::to_string(c) +
               ") failed: " + Describe(res, nullptr));
      break;
    }
    if (comm == nullptr) {
      env.Fail("bcclCommInitRankConfig returned success but no communicator");
      break;
    }
    env.comms.push_back(comm);
  }
  env.comm = env.comms.empty() ? nullptr : env.comms[0];
  bool usable = static_cast<int>(env.comms.size()) == opts_.commsPerRank;
  if (usable && opts_.withStream) {
    bcclResult_t res = bcclStreamCreate(&env.stream);
    if (res != bcclSuccess) {
      env.Fail("bcclStreamCreate failed: " + Describe(res, nullptr));
      usable = false;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    rankDone_[static_cast<size_t>(rank)] = true;
    ++inited_;
  }
  cv_.notify_all();

  uint64_t seen = 0;
  for (;;) {
    const std::function<void(RankEnv&)>* task = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) break;
      seen = generation_;
      task = task_;
    }
    env.errors_.clear();
    env.failures_ = 0;
    if (!usable) {
      env.Fail("this rank's communicators were not initialised");
    } else {
      try {
        (*task)(env);
      } catch (const std::exception& e) {
        env.Fail(std::string("exception: ") + e.what());
      } catch (...) {
        env.Fail("unknown exception");
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      rankDone_[static_cast<size_t>(rank)] = true;
      ++finished_;
    }
    cv_.notify_all();
  }

  env.errors_.clear();
  env.failures_ = 0;
  if (env.stream != nullptr) {
    bcclResult_t res = bcclStreamDestroy(env.stream);
    if (res != bcclSuccess) env.Fail("bcclStreamDestroy failed: " + Describe(res, nullptr));
    env.stream = nullptr;
  }
  for (bcclComm_t comm : env.comms) {
    if (comm == nullptr) continue;  // the test aborted or destroyed it itself
    bcclResult_t res = bcclCommDestroy(comm);
    // The comm is gone, so only the thread's last error can be asked for.
    if (res != bcclSuccess) env.Fail("bcclCommDestroy failed: " + Describe(res, nullptr));
  }
  env.comms.clear();
  env.comm = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rankDone_[static_cast<size_t>(rank)] = true;
    ++exited_;
  }
  cv_.notify_all();
}

::testing::AssertionResult ThreadRanks::Run(const std::string& label,
                                            const std::function<void(RankEnv&)>& fn) {
  if (!initError_.empty()) {
    return ::testing::AssertionFailure()
           << label << ": communicators not initialised:" << initError_;
  }
  if (shutDown_) return ::testing::AssertionFailure() << label << ": ranks already shut down";
  {
    std::unique_lock<std::mutex> lock(mu_);
    task_ = &fn;
    rankDone_.assign(rankDone_.size(), false);
    finished_ = 0;
    ++generation_;
    cv_.notify_all();
    WaitAll(lock, label, [&] { return finished_ == opts_.nranks; });
    task_ = nullptr;
  }
  std::ostringstream os;
  bool ok = true;
  for (const RankEnv& env : envs_) {
    if (env.libraryError_) poisoned_ = true;
    if (env.failures_ == 0) continue;
    ok = false;
    for (const auto& e : env.errors_) os << "\n  rank " << env.rank << ": " << e;
    if (env.failures_ > env.errors_.size()) {
      os << "\n  rank " << env.rank << ": (" << env.failures_ - env.errors_.size() << " more)";
    }
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << label << " [" << opts_.nranks << " ranks, "
         << (opts_.transports.empty() ? "default" : opts_.transports) << "]" << os.str();
}

::testing::AssertionResult ThreadRanks::Shutdown() {
  if (shutDown_) return ::testing::AssertionSuccess();
  shutDown_ = true;
  {
    std::unique_lock<std::mutex> lock(mu_);
    stop_ = true;
    rankDone_.assign(rankDone_.size(), false);
    cv_.notify_all();
    WaitAll(lock, "communicator destroy", [&] { return exited_ == opts_.nranks; });
  }
  for (auto& t : threads_) t.join();
  std::ostringstream os;
  bool ok = true;
  for (const RankEnv& env : envs_) {
    for (const auto& e : env.errors_) {
      ok = false;
      os << "\n  rank " << env.rank << ": " << e;
    }
  }
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "shutdown:" << os.str();
}

}  // namespace bccltest
