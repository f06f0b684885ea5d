// In-process ranks: one long-lived thread per rank, each owning its communicator(s), so a test
// can run many cases against one set of communicators (creating them per case would dominate
// the suite's run time). GoogleTest assertions are not safe from these threads, so a rank
// records failures in its RankEnv and Run() turns them into one AssertionResult on the caller.
#ifndef BCCL_TESTS_SUPPORT_THREAD_RANKS_H_
#define BCCL_TESTS_SUPPORT_THREAD_RANKS_H_

#include <bccl/bccl.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bccltest {

struct ThreadRanksOptions {
  int nranks = 2;
  // Copied into bcclConfig_t::transports; "" leaves it NULL (the library's default).
  std::string transports = "shm";
  // Short enough that a library bug fails the case instead of hanging the suite.
  int timeoutMs = 20000;
  // Communicators per rank, each from its own unique id (for multi-communicator tests).
  int commsPerRank = 1;
  // Give every rank a bcclStream_t (RankEnv::stream) for the life of the set.
  bool withStream = false;
  // A case still running after this long aborts the process with the case named: a rank thread
  // stuck inside the library cannot be cancelled, and an abort beats the CTest timeout's silence.
  int hangSeconds = 240;
};

// What a rank's code sees. Only its own rank thread touches it.
class RankEnv {
 public:
  int rank = 0;
  int nranks = 0;
  bcclComm_t comm = nullptr;  // comms[0]
  // Destroyed at shutdown; a test that frees one itself sets its entry to nullptr.
  std::vector<bcclComm_t> comms;
  bcclStream_t stream = nullptr;  // only with ThreadRanksOptions::withStream

  void Fail(const std::string& msg);
  // True on bcclSuccess; otherwise records `what`, the code and bcclGetLastError(comm).
  bool Ok(bcclResult_t res, const std::string& what, bcclComm_t errComm = nullptr);
  bool failed() const { return failures_ > 0; }

 private:
  friend class ThreadRanks;
  std::vector<std::string> errors_;
  size_t failures_ = 0;
  bool libraryError_ = false;
};

class ThreadRanks {
 public:
  explicit ThreadRanks(const ThreadRanksOptions& opts);
  ~ThreadRanks();
  ThreadRanks(const ThreadRanks&) = delete;
  ThreadRanks& operator=(const ThreadRanks&) = delete;

  // "" when every rank initialised every communicator.
  const std::string& initError() const { return initError_; }
  int nranks() const { return opts_.nranks; }
  const ThreadRanksOptions& options() const { return opts_; }

  // Runs fn on every rank thread at once and waits for all of them.
  ::testing::AssertionResult Run(const std::string& label, const std::function<void(RankEnv&)>& fn);
  // True once a library call failed in some Run: the communicators may be unusable, so callers
  // that share a set across cases should build a new one.
  bool poisoned() const { return poisoned_; }
  // Destroys the communicators on their threads and joins them; reports destroy failures.
  ::testing::AssertionResult Shutdown();

 private:
  void Worker(int rank);
  void WaitAll(std::unique_lock<std::mutex>& lock, const std::string& label,
               const std::function<bool()>& done);

  ThreadRanksOptions opts_;
  std::vector<bcclUniqueId> ids_;
  std::vector<std::thread> threads_;
  std::vector<RankEnv> envs_;
  std::vector<bool> rankDone_;
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void(RankEnv&)>* task_ = nullptr;
  uint64_t generation_ = 0;
  int inited_ = 0;
  int finished_ = 0;
  int exited_ = 0;
  bool stop_ = false;
  bool poisoned_ = false;
  bool shutDown_ = false;
  std::string initError_;
};

// Shorthand for the common options.
ThreadRanksOptions RanksOn(const std::string& transports, int nranks, int timeoutMs = 20000);

}  // namespace bccltest

#endif  // BCCL_TESTS_SUPPORT_THREAD_RANKS_H_
