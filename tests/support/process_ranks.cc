// Forked ranks for the process tier. Pipes carry the unique id from child rank 0 to its
// siblings (the parent never touches the library, so it starts no listener thread) and carry
// line-based reports from every child back to the parent, which enforces a hard deadline.
#include "support/process_ranks.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace bccltest {
namespace {

bool WriteAll(int fd, const void* data, size_t len) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t len) {
  char* p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

}  // namespace

void ChildEnv::Report(const std::string& line) {
  std::string msg = line;
  for (char& c : msg) {
    if (c == '\n') c = ' ';
  }
  msg += '\n';
  WriteAll(fd_, msg.data(), msg.size());
}

void ChildEnv::Fail(const std::string& msg) {
  failed_ = true;
  Report("FAIL " + msg);
}

bool ChildEnv::Ok(bcclResult_t res, const std::string& what, bcclComm_t comm) {
  if (res == bcclSuccess) return true;
  const char* str = bcclGetErrorString(res);
  const char* last = bcclGetLastError(comm);
  Fail(what + " failed: result " + std::to_string(static_cast<int>(res)) + " (" +
       (str ? str : "NULL") + "): '" + (last ? last : "NULL") + "'");
  return false;
}

bcclResult_t ChildEnv::InitComm(bcclComm_t* comm, const std::string& transports, int timeoutMs) {
  bcclConfig_t cfg = BCCL_CONFIG_INITIALIZER;
  cfg.timeoutMs = timeoutMs;
  cfg.transports = transports.empty() ? nullptr : transports.c_str();
  return bcclCommInitRankConfig(comm, nranks, id, rank, &cfg);
}

ProcessRanks::ProcessRanks(int nranks, int deadlineMs) : nranks_(nranks), deadlineMs_(deadlineMs) {}

int64_t ProcessRanks::NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

int ProcessRanks::CountThreads() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

void ProcessRanks::ChildMain(int rank, const ChildFn& fn) {
  ChildEnv env;
  env.rank = rank;
  env.nranks = nranks_;
  env.fd_ = reportWrite_[static_cast<size_t>(rank)];
  for (int r = 0; r < nranks_; ++r) {
    CloseFd(reportRead_[static_cast<size_t>(r)]);
    if (r != rank) CloseFd(reportWrite_[static_cast<size_t>(r)]);
    if (rank != 0) CloseFd(idWrite_[static_cast<size_t>(r)]);
    if (r != rank) CloseFd(idRead_[static_cast<size_t>(r)]);
  }
  if (rank == 0) {
    bcclResult_t res = bcclGetUniqueId(&env.id);
    if (res != bcclSuccess) {
      env.Ok(res, "bcclGetUniqueId");
      _exit(3);  // closing the id pipes tells the siblings to give up
    }
    for (int r = 1; r < nranks_; ++r) {
      WriteAll(idWrite_[static_cast<size_t>(r)], &env.id, sizeof env.id);
      CloseFd(idWrite_[static_cast<size_t>(r)]);
    }
  } else if (!ReadAll(idRead_[static_cast<size_t>(rank)], &env.id, sizeof env.id)) {
    env.Fail("no unique id arrived from rank 0");
    _exit(3);
  } else {
    CloseFd(idRead_[static_cast<size_t>(rank)]);
  }
  int code = fn(env);
  if (code == 0 && env.failed()) code = 1;
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(code);
}

bool ProcessRanks::Run(const ChildFn& fn, const LineFn& onLine) {
  const size_t n = static_cast<size_t>(nranks_);
  results_.assign(n, ChildResult{});
  killTimeNs_.assign(n, 0);
  timedOut_ = false;
  error_.clear();
  const int threads = CountThreads();
  if (threads != 1) {
    error_ = "the test process has " + std::to_string(threads) +
             " threads; forking now could copy a lock another thread holds";
    return false;
  }
  idRead_.assign(n, -1);
  idWrite_.assign(n, -1);
  reportRead_.assign(n, -1);
  reportWrite_.assign(n, -1);
  for (size_t r = 0; r < n; ++r) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      error_ = std::string("pipe2: ") + std::strerror(errno);
      return false;
    }
    reportRead_[r] = fds[0];
    reportWrite_[r] = fds[1];
    if (r == 0) continue;
    if (pipe2(fds, O_CLOEXEC) != 0) {
      error_ = std::string("pipe2: ") + std::strerror(errno);
      return false;
    }
    idRead_[r] = fds[0];
    idWrite_[r] = fds[1];
  }
  // Unflushed parent output would otherwise be printed again by every child.
  std::fflush(stdout);
  std::fflush(stderr);
  for (int r = 0; r < nranks_; ++r) {
    pid_t pid = fork();
    if (pid < 0) {
      error_ = std::string("fork: ") + std::strerror(errno);
      for (int k = 0; k < r; ++k) Kill(k, SIGKILL);
      break;
    }
    if (pid == 0) ChildMain(r, fn);
    results_[static_cast<size_t>(r)].pid = pid;
  }
  for (size_t r = 0; r < n; ++r) {
    CloseFd(reportWrite_[r]);
    CloseFd(idRead_[r]);
    CloseFd(idWrite_[r]);
  }

  std::vector<std::string> partial(n);
  const int64_t deadline = NowNs() + static_cast<int64_t>(deadlineMs_) * 1000000;
  for (;;) {
    bool busy = false;
    std::vector<pollfd> fds;
    std::vector<size_t> fdRank;
    for (size_t r = 0; r < n; ++r) {
      if (reportRead_[r] >= 0) {
        fds.push_back(pollfd{reportRead_[r], POLLIN, 0});
        fdRank.push_back(r);
      }
      if (results_[r].pid > 0 && !results_[r].reaped) busy = true;
    }
    if (!busy && fds.empty()) break;
    const int64_t now = NowNs();
    if (now > deadline && !timedOut_) {
      timedOut_ = true;
      for (int r = 0; r < nranks_; ++r) {
        if (results_[static_cast<size_t>(r)].pid > 0 && !results_[static_cast<size_t>(r)].reaped) {
          kill(results_[static_cast<size_t>(r)].pid, SIGKILL);
        }
      }
    }
    // A grandchild holding a pipe open must not keep the parent here forever.
    if (timedOut_ && now > deadline + 5000000000LL) break;
    if (!fds.empty())
      poll(fds.data(), fds.size(), 20);
    else
      usleep(20000);
    for (size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      const size_t r = fdRank[k];
      char buf[4096];
      ssize_t got = read(reportRead_[r], buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        CloseFd(reportRead_[r]);
        continue;
      }
      partial[r].append(buf, static_cast<size_t>(got));
      size_t nl;
      while ((nl = partial[r].find('\n')) != std::string::npos) {
        std::string line = partial[r].substr(0, nl);
        partial[r].erase(0, nl + 1);
        results_[r].lines.push_back(line);
        if (onLine) onLine(*this, static_cast<int>(r), line);
      }
    }
    for (size_t r = 0; r < n; ++r) {
      ChildResult& c = results_[r];
      if (c.pid <= 0 || c.reaped) continue;
      int status = 0;
      if (waitpid(c.pid, &status, WNOHANG) != c.pid) continue;
      c.reaped = true;
      c.exited = WIFEXITED(status);
      c.exitCode = c.exited ? WEXITSTATUS(status) : -1;
      c.termSignal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    }
  }
  for (size_t r = 0; r < n; ++r) {
    CloseFd(reportRead_[r]);
    ChildResult& c = results_[r];
    if (c.pid > 0 && !c.reaped) {
      kill(c.pid, SIGKILL);
      int status = 0;
      waitpid(c.pid, &status, 0);
      c.reaped = true;
      c.termSignal = SIGKILL;
    }
  }
  return error_.empty();
}

void ProcessRanks::Kill(int rank, int sig) {
  const ChildResult& c = results_[static_cast<size_t>(rank)];
  if (c.pid <= 0 || c.reaped) return;
  int64_t& when = killTimeNs_[static_cast<size_t>(rank)];
  if (when == 0) when = NowNs();
  kill(c.pid, sig);
}

std::string ProcessRanks::Summary() const {
  std::ostringstream os;
  if (timedOut_) os << "\n  DEADLINE of " << deadlineMs_ << " ms passed: all children killed";
  for (size_t r = 0; r < results_.size(); ++r) {
    const ChildResult& c = results_[r];
    os << "\n  rank " << r << " (pid " << c.pid << "): ";
    if (c.exited)
      os << "exited " << c.exitCode;
    else
      os << "killed by signal " << c.termSignal << " (" << strsignal(c.termSignal) << ")";
    for (const auto& l : c.lines) os << "\n    | " << l;
  }
  return os.str();
}

std::vector<std::string> ProcessRanks::LinesWith(int rank, const std::string& prefix) const {
  std::vector<std::string> out;
  for (const auto& l : results_[static_cast<size_t>(rank)].lines) {
    if (l.compare(0, prefix.size(), prefix) == 0) out.push_back(l.substr(prefix.size()));
  }
  return out;
}

bool ProcessRanks::AllPassed() const {
  if (timedOut_ || results_.empty()) return false;
  for (size_t r = 0; r < results_.size(); ++r) {
    const ChildResult& c = results_[r];
    if (!c.exited || c.exitCode != 0) return false;
    if (!LinesWith(static_cast<int>(r), "FAIL ").empty()) return false;
  }
  return true;
}

}  // namespace bccltest
