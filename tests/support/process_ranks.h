// Ranks as forked processes: the only way to test what threads cannot, i.e. shared memory
// between address spaces and a rank that dies abruptly (SIGKILL) while its peers are inside a
// collective. The parent never calls the library and must have no other threads when it forks,
// so that children start from a clean, lock-free copy of the process.
#ifndef BCCL_TESTS_SUPPORT_PROCESS_RANKS_H_
#define BCCL_TESTS_SUPPORT_PROCESS_RANKS_H_

#include <bccl/bccl.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bccltest {

// A child rank's view. Everything it wants the parent to know goes through Report().
class ChildEnv {
 public:
  int rank = 0;
  int nranks = 0;
  bcclUniqueId id{};

  // Sends one line to the parent (lines are short, so each write is atomic).
  void Report(const std::string& line);
  // Reports "FAIL <msg>" and makes Failed() true.
  void Fail(const std::string& msg);
  // True on bcclSuccess; otherwise fails with the code and the comm's last error.
  bool Ok(bcclResult_t res, const std::string& what, bcclComm_t comm = nullptr);
  bool failed() const { return failed_; }
  // bcclCommInitRankConfig with this rank's id, `transports` ("" = library default) and timeout.
  bcclResult_t InitComm(bcclComm_t* comm, const std::string& transports, int timeoutMs);

 private:
  friend class ProcessRanks;
  int fd_ = -1;
  bool failed_ = false;
};

struct ChildResult {
  pid_t pid = -1;
  bool reaped = false;
  bool exited = false;  // exited normally (then exitCode is meaningful)
  int exitCode = -1;
  int termSignal = 0;  // signal that ended it, when !exited
  std::vector<std::string> lines;
};

class ProcessRanks {
 public:
  // Runs in the child; the return value becomes its exit code (0 = the rank passed).
  using ChildFn = std::function<int(ChildEnv&)>;
  // Runs in the parent for every line a child reports; may call Kill().
  using LineFn = std::function<void(ProcessRanks&, int rank, const std::string& line)>;

  ProcessRanks(int nranks, int deadlineMs);
  // Forks the ranks, relays lines, reaps them. False (see error()) if the harness could not run
  // them; a deadline overrun kills every child and sets timedOut() but still returns true.
  bool Run(const ChildFn& fn, const LineFn& onLine = nullptr);
  // Sends `sig` to a child; the first call for a rank records the time (see killTimeNs).
  void Kill(int rank, int sig);

  const std::vector<ChildResult>& results() const { return results_; }
  const std::string& error() const { return error_; }
  bool timedOut() const { return timedOut_; }
  int64_t killTimeNs(int rank) const { return killTimeNs_[static_cast<size_t>(rank)]; }
  // Every child's status and lines, for failure messages.
  std::string Summary() const;
  // Lines reported by `rank` that start with `prefix` (prefix stripped).
  std::vector<std::string> LinesWith(int rank, const std::string& prefix) const;
  // True when every child exited with code 0 and none reported a failure.
  bool AllPassed() const;

  // CLOCK_MONOTONIC: the same clock in every process, so parent and children can compare.
  static int64_t NowNs();
  // Threads in the calling process, from /proc/self/task.
  static int CountThreads();

 private:
  [[noreturn]] void ChildMain(int rank, const ChildFn& fn);

  int nranks_;
  int deadlineMs_;
  std::vector<int> idRead_, idWrite_, reportRead_, reportWrite_;
  std::vector<ChildResult> results_;
  std::vector<int64_t> killTimeNs_;
  std::string error_;
  bool timedOut_ = false;
};

}  // namespace bccltest

#endif  // BCCL_TESTS_SUPPORT_PROCESS_RANKS_H_
