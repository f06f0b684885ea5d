// bcclrun: starts N local ranks of a bccl program on this machine, so a job needs neither MPI
// nor torchrun. It hands each rank its identity through the environment, keeps the ranks'
// output readable by prefixing and line-buffering it, and makes one failing rank end the job
// instead of leaving the others hung in a collective.

#include <bccl/bccl.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr long kDefaultGraceMs = 3000;
constexpr milliseconds kTermToKill{1000};
// A rank may leave a background child holding its pipes open; do not wait for it forever.
constexpr milliseconds kDrainAfterExit{500};
// A line this long without a newline is emitted anyway so one rank cannot grow us unbounded.
constexpr size_t kMaxLine = 64 * 1024;

const char kUsage[] =
    "usage: bcclrun -n N [-x VAR=VALUE | -x VAR]... [--grace-ms MS] [--timeout S] [--bind core]\n"
    "               [--] PROGRAM [ARGS...]\n"
    "  -n N            start N ranks (N >= 1)\n"
    "  -x VAR=VALUE    set VAR in every rank; -x VAR passes on this shell's value\n"
    "  --grace-ms MS   after a rank fails, wait MS ms for the others before killing them\n"
    "                  (default 3000, or BCCL_RUN_GRACE_MS)\n"
    "  --timeout S     kill every rank after S seconds and exit 124\n"
    "  --keep-going    a rank that dies does not end the others (elastic jobs); the exit\n"
    "                  status is 0 when every rank that finished exited 0\n"
    "  --bind core     pin rank r to the r-th CPU this launcher may use (round robin): ranks\n"
    "                  then share cores evenly and stay put (default: none, the kernel places)\n";

struct Options {
  int nranks = 0;
  std::map<std::string, std::string> exports;
  long graceMs = kDefaultGraceMs;
  std::optional<long> timeoutS;
  bool keepGoing = false;
  bool bindCores = false;
  std::vector<char*> program;  // argv for execvp, null-terminated
};

[[noreturn]] void usageError(const std::string& why) {
  std::fprintf(stderr, "bcclrun: %s\n%s", why.c_str(), kUsage);
  std::exit(2);
}

long parseNumber(const char* s, long min, long max, const char* what) {
  errno = 0;
  char* end = nullptr;
  long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
    usageError(std::string(what) + ", not '" + s + "'");
  }
  return v;
}

void addExport(Options* o, const std::string& spec) {
  size_t eq = spec.find('=');
  std::string name = spec.substr(0, eq);
  if (name.empty()) usageError("-x needs VAR=VALUE or VAR");
  if (eq != std::string::npos) {
    o->exports[name] = spec.substr(eq + 1);
    return;
  }
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) {
    std::fprintf(stderr, "bcclrun: warning: -x %s: not set here, not passed on\n", name.c_str());
    return;
  }
  o->exports[name] = value;
}

// Accepts "--opt V", "--opt=V" and, for short options, "-nV".
const char* optionValue(int argc, char** argv, int* i, const char* name) {
  const char* arg = argv[*i];
  size_t len = std::strlen(name);
  if (std::strncmp(arg, name, len) != 0) return nullptr;
  if (arg[len] == '\0') {
    if (*i + 1 >= argc) usageError(std::string("option ") + name + " needs a value");
    return argv[++*i];
  }
  bool isShort = name[1] != '-';
  if (arg[len] == '=' && !isShort) return arg + len + 1;
  if (isShort) return arg + len;
  return nullptr;
}

Options parseArgs(int argc, char** argv) {
  Options o;
  if (const char* env = std::getenv("BCCL_RUN_GRACE_MS")) {
    o.graceMs = parseNumber(env, 0, INT_MAX, "BCCL_RUN_GRACE_MS wants milliseconds");
  }
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; ++i) {
    const char* v = nullptr;
    if (std::strcmp(argv[i], "--") == 0) {
      ++i;
      break;
    } else if (std::strcmp(argv[i], "-h") == 0 || std::strcmp(argv[i], "--help") == 0) {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if ((v = optionValue(argc, argv, &i, "-n"))) {
      o.nranks = static_cast<int>(parseNumber(v, 1, 65536, "-n wants a rank count >= 1"));
    } else if ((v = optionValue(argc, argv, &i, "-x"))) {
      addExport(&o, v);
    } else if ((v = optionValue(argc, argv, &i, "--grace-ms"))) {
      o.graceMs = parseNumber(v, 0, INT_MAX, "--grace-ms wants milliseconds");
    } else if (std::strcmp(argv[i], "--keep-going") == 0) {
      o.keepGoing = true;
    } else if ((v = optionValue(argc, argv, &i, "--bind"))) {
      if (std::strcmp(v, "core") != 0 && std::strcmp(v, "none") != 0)
        usageError(std::string("--bind wants core or none, not '") + v + "'");
      o.bindCores = std::strcmp(v, "core") == 0;
    } else if ((v = optionValue(argc, argv, &i, "--timeout"))) {
      o.timeoutS = parseNumber(v, 1, INT_MAX / 1000, "--timeout wants seconds >= 1");
    } else {
      usageError(std::string("unknown option ") + argv[i]);
    }
  }
  if (o.nranks == 0) usageError("missing -n N");
  if (i >= argc) usageError("missing PROGRAM");
  o.program.assign(argv + i, argv + argc);
  o.program.push_back(nullptr);
  return o;
}

// ---- signals ----------------------------------------------------------------------------

int gSignalPipe[2] = {-1, -1};
constexpr unsigned char kFromTerminal = 0x80;

// Only wakes the main loop; everything else happens there, outside signal context.
void onSignal(int sig, siginfo_t* info, void*) {
  int savedErrno = errno;
  unsigned char byte = static_cast<unsigned char>(sig);
  // Ctrl-C already reaches every rank (they share our process group); forwarding it too
  // would deliver it twice.
  if (sig != SIGCHLD && info != nullptr && info->si_code == SI_KERNEL) byte |= kFromTerminal;
  ssize_t ignored = write(gSignalPipe[1], &byte, 1);
  (void)ignored;
  errno = savedErrno;
}

void installSignalHandlers() {
  if (pipe2(gSignalPipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    std::perror("bcclrun: pipe");
    std::exit(1);
  }
  struct sigaction sa {};
  sa.sa_sigaction = onSignal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGCHLD, SIGINT, SIGTERM}) sigaction(sig, &sa, nullptr);
  // A closed terminal or pager must not kill the launcher before it has cleaned up the ranks.
  signal(SIGPIPE, SIG_IGN);
}

// Makes sure fds 0-2 exist, so pipes we create never land on them and get clobbered by dup2.
void ensureStdFds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) == -1 && open("/dev/null", O_RDWR) != fd) std::exit(1);
  }
}

// ---- output -----------------------------------------------------------------------------

void writeAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, -1);
    } else if (n < 0 && errno != EINTR) {
      return;  // the reader went away; the ranks' exit status still matters
    }
  }
}

// One of a rank's output pipes. Holding back incomplete lines is what keeps two ranks from
// ever mixing within one line.
struct Stream {
  int fd = -1;
  int outFd = STDOUT_FILENO;
  std::string prefix;
  std::string pending;

  void emit(bool atEof) {
    std::string out;
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      out += prefix;
      out.append(pending, start, nl + 1 - start);
    }
    pending.erase(0, start);
    if (!pending.empty() && (atEof || pending.size() >= kMaxLine)) {
      out += prefix + pending + '\n';
      pending.clear();
    }
    if (!out.empty()) writeAll(outFd, out);
  }

  // Returns whether more may be waiting; the fd is non-blocking, so this never stalls.
  bool readSome() {
    char buf[65536];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) return true;
    if (n < 0 && errno == EAGAIN) return false;
    if (n > 0) {
      pending.append(buf, static_cast<size_t>(n));
      emit(false);
      return true;
    }
    close(fd);
    fd = -1;
    emit(true);
    return false;
  }

  void drain() {
    while (fd >= 0 && readSome()) {
    }
  }
};

// ---- ranks ------------------------------------------------------------------------------

struct Rank {
  pid_t pid = -1;
  bool running = false;
  Stream out, err;
};

std::string describeExit(int rank, pid_t pid, int status) {
  char line[256];
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    std::snprintf(line, sizeof line, "bcclrun: rank %d (pid %d) killed by signal %d (%s)\n", rank,
                  static_cast<int>(pid), sig, strsignal(sig));
  } else {
    std::snprintf(line, sizeof line, "bcclrun: rank %d (pid %d) exited with status %d\n", rank,
                  static_cast<int>(pid), WEXITSTATUS(status));
  }
  return line;
}

// The environment every rank gets: ours, overridden by -x, overridden by the rank identity.
std::vector<std::string> rankEnvironment(const Options& o, const std::string& id, int rank) {
  std::map<std::string, std::string> set = o.exports;
  set["BCCL_RANK"] = std::to_string(rank);
  set["BCCL_NRANKS"] = std::to_string(o.nranks);
  set["BCCL_LOCAL_RANK"] = std::to_string(rank);
  set["BCCL_LOCAL_SIZE"] = std::to_string(o.nranks);
  set["BCCL_UNIQUE_ID"] = id;
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry = *e;
    if (set.count(entry.substr(0, entry.find('='))) == 0) env.push_back(entry);
  }
  for (const auto& [name, value] : set) env.push_back(name + "=" + value);
  return env;
}

// Runs in the forked child, where another thread (the rendezvous listener) may have held a
// lock at fork time: so everything the child needs was allocated by the parent.
[[noreturn]] void execRank(char** argv, char** envp, int outFd, int errFd, int stdinFd,
                           pid_t parent, const cpu_set_t* cpus) {
  // Our handlers would feed the parent's signal pipe until exec; and exec keeps SIGPIPE ignored.
  for (int sig : {SIGINT, SIGTERM, SIGCHLD, SIGPIPE}) signal(sig, SIG_DFL);
  prctl(PR_SET_PDEATHSIG, SIGTERM);  // a SIGKILLed launcher must not leave orphans running
  if (getppid() != parent) _exit(1);
  if (cpus != nullptr) sched_setaffinity(0, sizeof(cpu_set_t), cpus);  // best effort
  if (stdinFd >= 0) dup2(stdinFd, STDIN_FILENO);
  dup2(outFd, STDOUT_FILENO);
  dup2(errFd, STDERR_FILENO);
  environ = envp;
  execvp(argv[0], argv);
  char msg[512];
  int len = std::snprintf(msg, sizeof msg, "bcclrun: cannot execute %s: %s\n", argv[0],
                          std::strerror(errno));
  if (len > 0) {
    ssize_t ignored = write(STDERR_FILENO, msg, std::min<size_t>(len, sizeof msg - 1));
    (void)ignored;
  }
  _exit(127);
}

// The CPUs this process may run on, each as a set of its own (made before any fork: a child
// must not allocate).
std::vector<cpu_set_t> oneCpuSetPerAllowedCpu() {
  std::vector<cpu_set_t> sets;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return sets;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &allowed)) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(c, &one);
    sets.push_back(one);
  }
  return sets;
}

class Launcher {
 public:
  Launcher(Options opts, std::string id) : o_(std::move(opts)), id_(std::move(id)) {
    if (o_.bindCores) bindSets_ = oneCpuSetPerAllowedCpu();
  }
  int run();

 private:
  enum class Phase { kRunning, kGrace, kTerminating, kKilling };

  bool spawn(int rank);
  void reap();
  void recordExit(int rank, int status);
  void signalRunning(int sig);
  void terminate(Clock::time_point now, const char* why);
  void escalate(Clock::time_point now);
  void onSignalPipe();
  bool pollOnce(Clock::time_point now);
  bool allReaped() const;
  bool allClosed() const;

  Options o_;
  std::string id_;
  std::vector<Rank> ranks_;
  int devNull_ = -1;
  Phase phase_ = Phase::kRunning;
  std::optional<Clock::time_point> phaseDeadline_, timeoutAt_, drainUntil_;
  bool timedOut_ = false;
  int interrupts_ = 0;
  int exitCode_ = 0;
  std::vector<cpu_set_t> bindSets_;  // --bind core: rank r gets bindSets_[r % size]
};

bool closeAll(std::initializer_list<int> fds) {
  int savedErrno = errno;  // the caller reports the error that made it give up
  for (int fd : fds) close(fd);
  errno = savedErrno;
  return false;
}

bool Launcher::spawn(int rank) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) return false;
  if (pipe2(err, O_CLOEXEC) != 0) return closeAll({out[0], out[1]});
  std::vector<std::string> env = rankEnvironment(o_, id_, rank);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  // Many ranks reading one terminal would steal each other's input; rank 0 gets it.
  int stdinFd = rank == 0 ? -1 : devNull_;
  pid_t parent = getpid();
  const cpu_set_t* cpus = bindSets_.empty() ? nullptr : &bindSets_[rank % bindSets_.size()];
  pid_t pid = fork();
  if (pid == 0) execRank(o_.program.data(), envp.data(), out[1], err[1], stdinFd, parent, cpus);
  closeAll({out[1], err[1]});
  if (pid < 0) return closeAll({out[0], err[0]});
  fcntl(out[0], F_SETFL, O_NONBLOCK);  // only our end: the rank's writes must still block
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  Rank& r = ranks_[rank];
  r.pid = pid;
  r.running = true;
  std::string prefix = "[" + std::to_string(rank) + "] ";
  r.out = Stream{out[0], STDOUT_FILENO, prefix, {}};
  r.err = Stream{err[0], STDERR_FILENO, prefix, {}};
  return true;
}

void Launcher::recordExit(int rank, int status) {
  ranks_[rank].running = false;
  bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (!failed) return;
  // A rank's last words usually explain its death, so they go out before the death notice.
  ranks_[rank].out.drain();
  ranks_[rank].err.drain();
  // Once we have signalled the ranks their deaths are our doing, not news.
  if (phase_ == Phase::kRunning || phase_ == Phase::kGrace) {
    writeAll(STDERR_FILENO, describeExit(rank, ranks_[rank].pid, status));
  }
  if (o_.keepGoing && phase_ == Phase::kRunning) {
    // Elastic: a lost rank is news, not the end; only a rank that finishes badly fails the job.
    if (WIFEXITED(status) && exitCode_ == 0) exitCode_ = 1;
    return;
  }
  if (exitCode_ == 0) exitCode_ = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
  if (phase_ == Phase::kRunning) {
    phase_ = Phase::kGrace;
    phaseDeadline_ = Clock::now() + milliseconds(o_.graceMs);
  }
}

// Polled on every loop turn rather than only after SIGCHLD, so no wakeup can be missed.
void Launcher::reap() {
  for (size_t i = 0; i < ranks_.size(); ++i) {
    if (!ranks_[i].running) continue;
    int status = 0;
    pid_t got;
    do {
      got = waitpid(ranks_[i].pid, &status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got == ranks_[i].pid) recordExit(static_cast<int>(i), status);
  }
}

// Only unreaped pids are signalled, so a pid can never have been reused by someone else.
void Launcher::signalRunning(int sig) {
  for (const Rank& r : ranks_) {
    if (r.running) kill(r.pid, sig);
  }
}

std::string runningList(const std::vector<Rank>& ranks) {
  std::string list;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i].running) list += (list.empty() ? "" : " ") + std::to_string(i);
  }
  return list;
}

void Launcher::terminate(Clock::time_point now, const char* why) {
  std::fprintf(stderr, "bcclrun: %s; terminating ranks %s\n", why, runningList(ranks_).c_str());
  phase_ = Phase::kTerminating;
  signalRunning(SIGTERM);
  phaseDeadline_ = now + kTermToKill;
}

void Launcher::escalate(Clock::time_point now) {
  if (allReaped()) return;
  char why[96];
  if (timeoutAt_ && now >= *timeoutAt_ && !timedOut_) {
    timedOut_ = true;
    std::snprintf(why, sizeof why, "timeout of %ld s reached", *o_.timeoutS);
    terminate(now, why);
  } else if (phaseDeadline_ && now >= *phaseDeadline_ && phase_ == Phase::kGrace) {
    std::snprintf(why, sizeof why, "grace period of %ld ms over", o_.graceMs);
    terminate(now, why);
  } else if (phaseDeadline_ && now >= *phaseDeadline_ && phase_ == Phase::kTerminating) {
    std::fprintf(stderr, "bcclrun: killing ranks %s\n", runningList(ranks_).c_str());
    phase_ = Phase::kKilling;
    signalRunning(SIGKILL);
    phaseDeadline_.reset();
  }
}

void Launcher::onSignalPipe() {
  unsigned char bytes[64];
  ssize_t n;
  while ((n = read(gSignalPipe[0], bytes, sizeof bytes)) > 0) {
    for (ssize_t i = 0; i < n; ++i) {
      int sig = bytes[i] & ~kFromTerminal;
      if (sig == SIGCHLD) continue;  // reap() runs on every loop turn anyway
      if (++interrupts_ > 1) {
        std::fprintf(stderr, "bcclrun: interrupted again; killing ranks %s\n",
                     runningList(ranks_).c_str());
        phase_ = Phase::kKilling;
        phaseDeadline_.reset();
        signalRunning(SIGKILL);
      } else if (!(bytes[i] & kFromTerminal)) {
        signalRunning(sig);
      }
    }
  }
}

bool Launcher::allReaped() const {
  return std::none_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.running; });
}

bool Launcher::allClosed() const {
  return std::all_of(ranks_.begin(), ranks_.end(),
                     [](const Rank& r) { return r.out.fd < 0 && r.err.fd < 0; });
}

// Waits for output, a signal or the next deadline; false if waiting itself broke.
bool Launcher::pollOnce(Clock::time_point now) {
  std::optional<Clock::time_point> next = drainUntil_;
  for (auto d : {phaseDeadline_, timedOut_ ? std::nullopt : timeoutAt_}) {
    if (d && (!next || *d < *next)) next = d;
  }
  int timeoutMs = -1;
  if (next) {
    auto left = std::chrono::ceil<milliseconds>(*next - now).count();
    timeoutMs = static_cast<int>(std::clamp<long long>(left, 0, INT_MAX));
  }
  std::vector<pollfd> fds{{gSignalPipe[0], POLLIN, 0}};
  std::vector<Stream*> streams;
  for (Rank& r : ranks_) {
    for (Stream* s : {&r.out, &r.err}) {
      if (s->fd < 0) continue;
      fds.push_back({s->fd, POLLIN, 0});
      streams.push_back(s);
    }
  }
  int n = poll(fds.data(), fds.size(), timeoutMs);
  if (n < 0 && errno != EINTR) return false;
  if (n <= 0) return true;
  if (fds[0].revents) onSignalPipe();
  for (size_t i = 1; i < fds.size(); ++i) {
    if (fds[i].revents) streams[i - 1]->readSome();
  }
  return true;
}

int Launcher::run() {
  devNull_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ranks_.resize(o_.nranks);
  if (o_.timeoutS) timeoutAt_ = Clock::now() + std::chrono::seconds(*o_.timeoutS);
  for (int r = 0; r < o_.nranks; ++r) {
    if (!spawn(r)) {
      std::fprintf(stderr, "bcclrun: cannot start rank %d: %s\n", r, std::strerror(errno));
      exitCode_ = 1;
      terminate(Clock::now(), "the job cannot work without it");
      break;
    }
  }
  for (;;) {
    reap();
    Clock::time_point now = Clock::now();
    if (allReaped()) {
      if (allClosed() || (drainUntil_ && now >= *drainUntil_)) break;
      if (!drainUntil_) drainUntil_ = now + kDrainAfterExit;
    }
    escalate(now);
    if (!pollOnce(now)) {
      std::perror("bcclrun: poll");
      signalRunning(SIGKILL);  // we can no longer watch them, so they must not outlive us
      exitCode_ = 1;
      break;
    }
  }
  for (Rank& r : ranks_) {
    for (Stream* s : {&r.out, &r.err}) s->emit(true);
  }
  if (devNull_ >= 0) close(devNull_);
  return timedOut_ ? 124 : exitCode_;
}

std::string makeUniqueId() {
  bcclUniqueId id;
  char text[BCCL_UNIQUE_ID_STRING_BYTES];
  bcclResult_t res = bcclGetUniqueId(&id);
  if (res == bcclSuccess) res = bcclUniqueIdToString(&id, text, sizeof text);
  if (res != bcclSuccess) {
    std::fprintf(stderr, "bcclrun: cannot create a unique id: %s: %s\n", bcclGetErrorString(res),
                 bcclGetLastError(nullptr));
    std::exit(1);
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  ensureStdFds();
  Options opts = parseArgs(argc, argv);
  // Local ranks reach each other and the rendezvous over loopback; set before the listener
  // thread starts, since setenv is not thread-safe.
  setenv("BCCL_SOCKET_IFNAME", "lo", 0);
  std::string id = makeUniqueId();
  // Installed only now: until a rank exists, the default action of Ctrl-C is the right one.
  installSignalHandlers();
  Launcher launcher(std::move(opts), std::move(id));
  return launcher.run();
}
