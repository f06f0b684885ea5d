// How fast failures are noticed and repaired, measured with real processes and SIGKILL:
// for each trial, N ranks loop on small allreduces, the bench kills a random rank, and every
// survivor reports (on the shared CLOCK_MONOTONIC) when its collective failed and when its
// shrink returned a working communicator. Also the idle cost of failure monitoring: CPU time a
// rank's process uses while its communicator sits idle.
//   fault_bench [-n 4,8,16] [-t trials] [-T transports]
#include <bccl/bccl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct Report {
  int64_t errorNs = 0, shrinkNs = 0;
  double idleCpuPct = -1;
};

// Child: init, signal "looping", allreduce until failure, shrink, verify, report.
[[noreturn]] void child(int rank, int n, int idPipe, int out, const char* transports,
                        bool idleProbe) {
  bcclUniqueId id;
  if (rank == 0) {
    bcclGetUniqueId(&id);
    for (int i = 1; i < n; ++i)
      if (write(idPipe, &id, sizeof id) != sizeof id) _exit(2);
  } else if (read(idPipe, &id, sizeof id) != sizeof id) {
    _exit(2);
  }
  bcclConfig_t cfg = BCCL_CONFIG_INITIALIZER;
  cfg.transports = transports;
  cfg.timeoutMs = 30000;
  bcclComm_t comm;
  if (bcclCommInitRankConfig(&comm, n, id, rank, &cfg) != bcclSuccess) _exit(3);
  Report rep;
  if (idleProbe) {
    rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    int64_t t0 = nowNs();
    usleep(2000000);
    getrusage(RUSAGE_SELF, &b);
    double cpu =
        (b.ru_utime.tv_sec - a.ru_utime.tv_sec + b.ru_stime.tv_sec - a.ru_stime.tv_sec) +
        (b.ru_utime.tv_usec - a.ru_utime.tv_usec + b.ru_stime.tv_usec - a.ru_stime.tv_usec) / 1e6;
    rep.idleCpuPct = 100.0 * cpu / ((nowNs() - t0) / 1e9);
    int32_t x = 1;
    bcclAllReduce(&x, &x, 1, bcclInt32, bcclSum, comm, nullptr);  // everyone idles together
  } else {
    char go = 'L';
    if (write(out, &go, 1) != 1) _exit(2);
    int32_t v[256];
    for (;;) {
      for (int i = 0; i < 256; ++i) v[i] = 1;
      if (bcclAllReduce(v, v, 256, bcclInt32, bcclSum, comm, nullptr) != bcclSuccess) break;
    }
    rep.errorNs = nowNs();
    bcclComm_t next;
    if (bcclCommShrink(comm, nullptr, 0, &next, nullptr, BCCL_SHRINK_ABORT) != bcclSuccess)
      _exit(4);
    int32_t one = 1;
    if (bcclAllReduce(&one, &one, 1, bcclInt32, bcclSum, next, nullptr) != bcclSuccess ||
        one != n - 1)
      _exit(5);
    rep.shrinkNs = nowNs();
    bcclCommDestroy(next);
    bcclCommAbort(comm);
  }
  if (write(out, &rep, sizeof rep) != sizeof rep) _exit(2);
  if (idleProbe) bcclCommDestroy(comm);
  _exit(0);
}

struct Trial {
  std::vector<Report> survivors;
  int64_t killNs = 0;
  bool ok = false;
};

Trial runTrial(int n, const char* transports, bool idleProbe, std::mt19937& rng) {
  int idp[2], rp[2];
  if (pipe(idp) != 0 || pipe(rp) != 0) std::exit(1);
  std::vector<pid_t> pids(n);
  for (int r = 0; r < n; ++r) {
    pids[r] = fork();
    if (pids[r] == 0) child(r, n, r == 0 ? idp[1] : idp[0], rp[1], transports, idleProbe);
  }
  close(idp[0]);
  close(idp[1]);
  close(rp[1]);
  Trial t;
  int victim = -1;
  if (!idleProbe) {
    char c;
    for (int i = 0; i < n; ++i)
      if (read(rp[0], &c, 1) != 1) break;
    usleep(20000 + rng() % 30000);
    victim = static_cast<int>(rng() % n);
    t.killNs = nowNs();
    kill(pids[victim], SIGKILL);
  }
  const int expected = idleProbe ? n : n - 1;
  for (int i = 0; i < expected; ++i) {
    Report rep;
    if (read(rp[0], &rep, sizeof rep) != sizeof rep) break;
    t.survivors.push_back(rep);
  }
  close(rp[0]);
  bool allOk = static_cast<int>(t.survivors.size()) == expected;
  for (int r = 0; r < n; ++r) {
    int status = 0;
    waitpid(pids[r], &status, 0);
    if (r != victim && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) allOk = false;
  }
  t.ok = allOk;
  return t;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes{4, 8, 16};
  int trials = 10;
  const char* transports = "shm";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "-n")) {
      sizes.clear();
      std::stringstream in(argv[i + 1]);
      std::string s;
      while (std::getline(in, s, ',')) sizes.push_back(atoi(s.c_str()));
    } else if (!strcmp(argv[i], "-t")) {
      trials = atoi(argv[i + 1]);
    } else if (!strcmp(argv[i], "-T")) {
      transports = argv[i + 1];
    }
  }
  std::mt19937 rng(12345);
  printf("# fault_bench: SIGKILL a random rank during allreduce loops; transports=%s, %d trials\n",
         transports, trials);
  printf("# %6s %14s %14s %14s %14s %14s %14s %8s %10s\n", "nranks", "first_med_ms", "first_max_ms",
         "last_med_ms", "last_max_ms", "shrink_med_ms", "shrink_max_ms", "failed", "idle_cpu%");
  int bad = 0;
  for (int n : sizes) {
    std::vector<double> first, last, shrink;
    int failedTrials = 0;
    for (int k = 0; k < trials; ++k) {
      Trial t = runTrial(n, transports, false, rng);
      if (!t.ok) {
        ++failedTrials;
        continue;
      }
      int64_t lo = INT64_MAX, hi = 0, sh = 0;
      for (const Report& r : t.survivors) {
        lo = std::min(lo, r.errorNs);
        hi = std::max(hi, r.errorNs);
        sh = std::max(sh, r.shrinkNs);
      }
      first.push_back((lo - t.killNs) / 1e6);
      last.push_back((hi - t.killNs) / 1e6);
      shrink.push_back((sh - hi) / 1e6);
    }
    Trial idle = runTrial(n, transports, true, rng);
    double cpu = 0;
    for (const Report& r : idle.survivors) cpu = std::max(cpu, r.idleCpuPct);
    printf("  %6d %14.2f %14.2f %14.2f %14.2f %14.2f %14.2f %8d %10.2f\n", n,
           percentile(first, 0.5), percentile(first, 1), percentile(last, 0.5), percentile(last, 1),
           percentile(shrink, 0.5), percentile(shrink, 1), failedTrials, cpu);
    bad += failedTrials;
  }
  printf(
      "# first/last: SIGKILL to the first/last survivor's failed allreduce; shrink: last error to\n"
      "# the last survivor's first allreduce on the shrunk communicator; idle_cpu: max over ranks "
      "of\n"
      "# the CPU one rank's process uses while its communicator is idle (heartbeats only).\n");
  return bad == 0 ? 0 : 1;
}
