// The shared body of the perf tools: buffers, timing, result checking and the nccl-tests-shaped
// table (flags are in perf_options.cc, dtypes and values in perf_values.cc). See perf_common.h
// for the split between harness and tool.
#include "perf_common.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "perf_options.h"
#include "perf_values.h"

namespace bcclperf {

Layout Collective::GetLayout(size_t count, int rank, int nranks) const {
  (void)rank;
  (void)nranks;
  Layout l;
  l.send_elems = count;
  l.recv_elems = count;
  return l;
}

namespace {

// ---- errors -----------------------------------------------------------------------------------

bcclComm_t g_comm = nullptr;
int g_rank = -1;

// Any failed bccl call ends the run: the numbers after a failure would mean nothing. Aborting
// the communicator lets the other ranks fail fast instead of waiting for a timeout.
[[noreturn]] void Fail(const char* what, bcclResult_t r, const char* file, int line) {
  // The communicator's message names the failing peer; the thread's covers calls that take no
  // communicator (stream synchronize) and failures before the communicator exists.
  const std::string comm_msg = g_comm ? bcclGetLastError(g_comm) : "";
  const std::string thread_msg = bcclGetLastError(nullptr);
  std::string detail = comm_msg.empty() ? thread_msg : comm_msg;
  if (!comm_msg.empty() && !thread_msg.empty() && comm_msg != thread_msg) {
    detail += " / " + thread_msg;
  }
  const std::string who = g_rank >= 0 ? std::to_string(g_rank) : "?";
  std::fprintf(stderr, "rank %s: %s failed at %s:%d: %s (%d): %s\n", who.c_str(), what, file, line,
               bcclGetErrorString(r), static_cast<int>(r), detail.c_str());
  std::fflush(stderr);
  if (g_comm) bcclCommAbort(g_comm);
  std::exit(1);
}

#define PERF_CHECK(call)                                                  \
  do {                                                                    \
    const bcclResult_t perf_r_ = (call);                                  \
    if (perf_r_ != bcclSuccess) Fail(#call, perf_r_, __FILE__, __LINE__); \
  } while (0)

// ---- buffers ----------------------------------------------------------------------------------

// Host buffers with guard bytes on both sides, so a collective that writes outside the buffer it
// was given shows up as #wrong rather than as silent heap damage.
class GuardedBuffer {
 public:
  static constexpr size_t kGuard = 64;
  static constexpr unsigned char kGuardByte = 0xA5;

  bool Allocate(size_t bytes) {
    const size_t body = (bytes + kGuard - 1) / kGuard * kGuard;
    base_ = static_cast<unsigned char*>(std::aligned_alloc(kGuard, body + 2 * kGuard));
    return base_ != nullptr;
  }
  ~GuardedBuffer() { std::free(base_); }
  unsigned char* data() const { return base_ + kGuard; }

  // Rows use a prefix of the buffer, so the trailing guard moves with the row's size.
  void Arm(size_t used) const {
    std::memset(base_, kGuardByte, kGuard);
    std::memset(data() + used, kGuardByte, kGuard);
  }
  int64_t Broken(size_t used) const {
    int64_t n = 0;
    for (size_t i = 0; i < kGuard; ++i) {
      n += base_[i] != kGuardByte;
      n += data()[used + i] != kGuardByte;
    }
    return n;
  }

 private:
  unsigned char* base_ = nullptr;
};

// ---- the run ----------------------------------------------------------------------------------

// Per-call spread (-P 1): min, median, 90th percentile and max of one rank's call times.
constexpr int kSpreadPoints = 4;
const char* const kSpreadNames[kSpreadPoints] = {"min", "p50", "p90", "max"};

struct CellResult {
  double time_us = 0;
  int64_t wrong = 0;
  double spread_us[kSpreadPoints] = {};
};

void FillSpread(std::vector<double> samples, double* out) {
  if (samples.empty()) return;
  std::sort(samples.begin(), samples.end());
  const size_t last = samples.size() - 1;
  out[0] = samples.front();
  out[1] = samples[last / 2];
  out[2] = samples[last * 9 / 10];
  out[3] = samples.back();
}

class Runner {
 public:
  Runner(const Collective& coll, const Options& opt, bcclComm_t comm, int rank, int nranks,
         bcclStream_t stream)
      : coll_(coll), opt_(opt), comm_(comm), rank_(rank), nranks_(nranks), stream_(stream) {}

  bool AllocateFor(const std::vector<std::vector<size_t>>& counts_per_dtype);
  // Runs and prints one row; adds to the totals.
  void Row(bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in, size_t count);

  int64_t total_wrong() const { return total_wrong_; }
  double avg_busbw() const { return bw_cells_ ? bw_sum_ / bw_cells_ : 0.0; }

 private:
  CellResult Cell(bool in_place, bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in,
                  size_t count, const Layout& lay);
  void Launch(const Call& call) const {
    const bcclResult_t r = coll_.Run(call);
    if (r != bcclSuccess) {
      char what[128];
      std::snprintf(what, sizeof what, "%s(count=%zu, %s%s%s)", coll_.Name(), call.count,
                    Info(call.dtype).name, coll_.UsesOp() ? ", " : "",
                    coll_.UsesOp() ? kOpNames[call.op] : "");
      Fail(what, r, __FILE__, __LINE__);
    }
  }
  void Sync() const {
    if (stream_) PERF_CHECK(bcclStreamSynchronize(stream_));
  }
  void Fill(const Inputs& in, bcclDataType_t dtype, void* p, size_t elems) const {
    for (size_t i = 0; i < elems; ++i) Store(dtype, p, i, in.At(rank_, i));
  }
  int64_t Verify(bool in_place, bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in,
                 size_t count, const Layout& lay, const Call& call);

  const Collective& coll_;
  const Options& opt_;
  bcclComm_t comm_;
  int rank_, nranks_;
  bcclStream_t stream_;
  GuardedBuffer send_, recv_, inplace_;
  std::vector<unsigned char> expected_;
  std::vector<bool> checked_;
  int64_t total_wrong_ = 0;
  double bw_sum_ = 0;
  int bw_cells_ = 0;
};

bool Runner::AllocateFor(const std::vector<std::vector<size_t>>& counts_per_dtype) {
  size_t send_max = 0, recv_max = 0, inplace_max = 0;
  for (size_t t = 0; t < opt_.dtypes.size(); ++t) {
    const size_t ts = Info(opt_.dtypes[t]).size;
    for (size_t count : counts_per_dtype[t]) {
      const Layout l = coll_.GetLayout(count, rank_, nranks_);
      send_max = std::max(send_max, l.send_elems * ts);
      recv_max = std::max(recv_max, l.recv_elems * ts);
      inplace_max = std::max(inplace_max, std::max(l.send_elems, l.recv_elems) * ts);
    }
  }
  if (!send_.Allocate(send_max) || !recv_.Allocate(recv_max) || !inplace_.Allocate(inplace_max)) {
    return false;
  }
  if (opt_.check) {
    try {
      expected_.resize(recv_max);
      checked_.resize(recv_max);
    } catch (const std::bad_alloc&) {
      return false;
    }
  }
  return true;
}

CellResult Runner::Cell(bool in_place, bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in,
                        size_t count, const Layout& lay) {
  const size_t ts = Info(dtype).size;
  Call call{};
  if (in_place) {
    call.send = inplace_.data() + lay.in_place_send_offset * ts;
    call.recv = inplace_.data() + lay.in_place_recv_offset * ts;
  } else {
    call.send = send_.data();
    call.recv = recv_.data();
  }
  call.count = count;
  call.dtype = dtype;
  call.op = op;
  call.root = opt_.root;
  call.rank = rank_;
  call.nranks = nranks_;
  call.comm = comm_;
  call.stream = stream_;

  // Real data rather than zeros: reductions over denormals or all-equal values can run at a
  // different speed than the traffic the numbers are meant to describe.
  Fill(in, dtype, const_cast<void*>(call.send), lay.send_elems);

  for (int i = 0; i < opt_.warmup; ++i) Launch(call);
  Sync();
  PERF_CHECK(bcclBarrier(comm_, nullptr));

  using Clock = std::chrono::steady_clock;
  std::vector<double> per_call;
  if (opt_.per_call) per_call.reserve(static_cast<size_t>(opt_.iters));
  const auto t0 = Clock::now();
  if (opt_.per_call) {
    // Blocking calls (the options demand -z 1): each call's own time, one clock read apart.
    auto before = t0;
    for (int i = 0; i < opt_.iters; ++i) {
      Launch(call);
      const auto after = Clock::now();
      per_call.push_back(std::chrono::duration<double, std::micro>(after - before).count());
      before = after;
    }
  } else {
    for (int i = 0; i < opt_.iters; ++i) Launch(call);
  }
  Sync();
  const auto t1 = Clock::now();

  CellResult res;
  res.time_us = std::chrono::duration<double, std::micro>(t1 - t0).count() / opt_.iters;
  FillSpread(std::move(per_call), res.spread_us);
  if (opt_.check) res.wrong = Verify(in_place, dtype, op, in, count, lay, call);
  return res;
}

// One more call on freshly written inputs, timed loop results discarded: in-place loops have
// overwritten their input many times over by now.
int64_t Runner::Verify(bool in_place, bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in,
                       size_t count, const Layout& lay, const Call& call) {
  const size_t ts = Info(dtype).size;
  void* recv = call.recv;
  bool all_checked = true;
  for (size_t j = 0; j < lay.recv_elems; ++j) {
    int64_t v = 0;
    const bool has = coll_.Expected(in, count, j, &v);
    checked_[j] = has;
    all_checked &= has;
    if (has) Store(dtype, expected_.data(), j, v);
  }
  // Pre-fill the receive view with values that differ from the expected ones in one bit, so an
  // element the collective never writes cannot pass by luck. The send view is written after, as
  // in-place views overlap.
  for (size_t j = 0; j < lay.recv_elems; ++j) {
    unsigned char* dst = static_cast<unsigned char*>(recv) + j * ts;
    if (checked_[j]) {
      std::memcpy(dst, expected_.data() + j * ts, ts);
      dst[0] ^= 1u;
    } else {
      std::memset(dst, 0xCD, ts);
    }
  }
  Fill(in, dtype, const_cast<void*>(call.send), lay.send_elems);
  const size_t send_bytes = lay.send_elems * ts, recv_bytes = lay.recv_elems * ts;
  const size_t inplace_bytes = std::max(send_bytes, recv_bytes);
  if (in_place) {
    inplace_.Arm(inplace_bytes);
  } else {
    send_.Arm(send_bytes);
    recv_.Arm(recv_bytes);
  }

  Launch(call);
  Sync();

  int64_t wrong = 0;
  size_t first_bad = SIZE_MAX;
  if (!all_checked || std::memcmp(recv, expected_.data(), recv_bytes) != 0) {
    for (size_t j = 0; j < lay.recv_elems; ++j) {
      if (checked_[j] && !SameElem(dtype, recv, expected_.data(), j)) {
        ++wrong;
        if (first_bad == SIZE_MAX) first_bad = j;
      }
    }
  }
  // An out-of-place collective must leave its input alone.
  int64_t send_changed = 0;
  if (!in_place) {
    unsigned char tmp[8];
    for (size_t i = 0; i < lay.send_elems; ++i) {
      Store(dtype, tmp, 0, in.At(rank_, i));
      send_changed +=
          std::memcmp(tmp, static_cast<const unsigned char*>(call.send) + i * ts, ts) != 0;
    }
  }
  const int64_t guards = in_place ? inplace_.Broken(inplace_bytes)
                                  : send_.Broken(send_bytes) + recv_.Broken(recv_bytes);

  if (wrong || send_changed || guards) {
    // One line per rank and cell: enough to start a bug report without flooding the table.
    std::fprintf(stderr, "# rank %d: %s %s%s%s count %zu %s: %" PRId64 " wrong", rank_,
                 coll_.Name(), Info(dtype).name, coll_.UsesOp() ? " " : "",
                 coll_.UsesOp() ? kOpNames[op] : "", count, in_place ? "in-place" : "out-of-place",
                 wrong);
    if (first_bad != SIZE_MAX) {
      std::fprintf(stderr, " (first at recv[%zu]: got %s, expected %s)", first_bad,
                   FormatElem(dtype, recv, first_bad).c_str(),
                   FormatElem(dtype, expected_.data(), first_bad).c_str());
    }
    std::fprintf(stderr,
                 ", %" PRId64 " send elements modified, %" PRId64 " guard bytes overwritten\n",
                 send_changed, guards);
  }
  return wrong + send_changed + guards;
}

std::string TimeStr(double us) {
  char b[32];
  std::snprintf(b, sizeof b, us >= 1e4 ? "%7.0f" : us >= 100 ? "%7.1f" : "%7.2f", us);
  return b;
}

void Runner::Row(bcclDataType_t dtype, bcclRedOp_t op, const Inputs& in, size_t count) {
  const Layout lay = coll_.GetLayout(count, rank_, nranks_);
  const bool has_in_place = coll_.HasInPlace() && !opt_.out_of_place_only;
  CellResult cells[2];
  cells[0] = Cell(false, dtype, op, in, count, lay);
  if (has_in_place) cells[1] = Cell(true, dtype, op, in, count, lay);

  // The slowest rank defines the collective's time; wrong elements count on every rank.
  double times[2] = {cells[0].time_us, cells[1].time_us};
  int64_t wrong[2] = {cells[0].wrong, cells[1].wrong};
  PERF_CHECK(bcclAllReduce(times, times, 2, bcclFloat64, bcclMax, comm_, nullptr));
  PERF_CHECK(bcclAllReduce(wrong, wrong, 2, bcclInt64, bcclSum, comm_, nullptr));
  // The spread of the slowest rank at each point (each point's max over ranks).
  double spread[2][kSpreadPoints] = {};
  if (opt_.per_call) {
    for (int c = 0; c < 2; ++c)
      std::copy(cells[c].spread_us, cells[c].spread_us + kSpreadPoints, spread[c]);
    PERF_CHECK(
        bcclAllReduce(spread, spread, 2 * kSpreadPoints, bcclFloat64, bcclMax, comm_, nullptr));
  }

  const size_t size = count * Info(dtype).size * coll_.SizeElemsPerCount(nranks_);
  if (rank_ == 0) {
    std::printf("%12zu  %12zu  %8s  %6s  %6d", size, count, Info(dtype).name,
                coll_.UsesOp() ? kOpNames[op] : "none", coll_.UsesRoot() ? opt_.root : -1);
  }
  for (int c = 0; c < 2; ++c) {
    if (c == 1 && !has_in_place) {
      if (rank_ == 0) std::printf("  %7s  %6s  %6s  %6s", "N/A", "N/A", "N/A", "N/A");
      continue;
    }
    const double algbw = times[c] > 0 ? static_cast<double>(size) / 1e3 / times[c] : 0.0;
    const double busbw = algbw * coll_.BusFactor(nranks_);
    bw_sum_ += busbw;
    ++bw_cells_;
    total_wrong_ += wrong[c];
    if (rank_ == 0) {
      char w[32];
      if (opt_.check) {
        std::snprintf(w, sizeof w, "%" PRId64, wrong[c]);
      } else {
        std::snprintf(w, sizeof w, "N/A");
      }
      std::printf("  %s  %6.2f  %6.2f  %6s", TimeStr(times[c]).c_str(), algbw, busbw, w);
    }
  }
  if (rank_ == 0) {
    std::printf("\n");
    // A comment line, so that tools reading the table rows see nccl-tests' columns only.
    for (int c = 0; opt_.per_call && c < (has_in_place ? 2 : 1); ++c) {
      std::printf("# per-call %12zu %-12s (us):", size, c == 0 ? "out-of-place" : "in-place");
      for (int k = 0; k < kSpreadPoints; ++k)
        std::printf(" %s %.2f", kSpreadNames[k], spread[c][k]);
      std::printf("\n");
    }
    std::fflush(stdout);
  }
}

std::string Center(const char* text, int width) {
  const int len = static_cast<int>(std::strlen(text));
  const int left = std::max(0, (width - len) / 2);
  return std::string(left, ' ') + text + std::string(std::max(0, width - len - left), ' ');
}

// Prints one header line without the trailing blanks that padding leaves.
void PrintLine(std::string line) {
  line.erase(line.find_last_not_of(' ') + 1);
  std::printf("%s\n", line.c_str());
}

std::string Fmt(const char* fmt, const char* a, const char* b, const char* c, const char* d,
                const char* e = nullptr) {
  char buf[128];
  std::snprintf(buf, sizeof buf, fmt, a, b, c, d, e);
  return buf;
}

void PrintTableHeader() {
  // Widths follow the row format: 52 columns of row description, then two 33-column cells.
  const char* kCell = "  %7s  %6s  %6s  %6s";
  PrintLine("#");
  PrintLine("#" + std::string(51, ' ') + Center("out-of-place", 33) + Center("in-place", 33));
  std::string names = Fmt("#%11s  %12s  %8s  %6s  %6s", "size", "count", "type", "redop", "root");
  std::string units = Fmt("#%11s  %12s  %8s  %6s  %6s", "(B)", "(elements)", "", "", "");
  for (int c = 0; c < 2; ++c) {
    names += Fmt(kCell, "time", "algbw", "busbw", "#wrong");
    units += Fmt(kCell, "(us)", "(GB/s)", "(GB/s)", "");
  }
  PrintLine(names);
  PrintLine(units);
}

struct RankInfo {
  int32_t pid;
  char host[60];
};

void PrintHeader(const Collective& coll, const Options& o, bcclComm_t comm, int rank, int nranks,
                 const char* prog) {
  RankInfo mine{};
  mine.pid = static_cast<int32_t>(getpid());
  if (gethostname(mine.host, sizeof mine.host - 1) != 0) std::strcpy(mine.host, "?");
  std::vector<RankInfo> all(static_cast<size_t>(nranks));
  PERF_CHECK(bcclAllGather(&mine, all.data(), sizeof(RankInfo), bcclUint8, comm, nullptr));
  if (rank != 0) return;

  int version = 0;
  PERF_CHECK(bcclGetVersion(&version));
  const char* transport = std::getenv("BCCL_TRANSPORT");
  const char* slash = std::strrchr(prog, '/');
  std::printf("# %s (%s): bccl version %d.%d.%d (%d), nranks %d, BCCL_TRANSPORT %s\n",
              slash ? slash + 1 : prog, coll.Name(), version / 10000, version / 100 % 100,
              version % 100, version, nranks, transport && *transport ? transport : "(unset)");
  std::printf(
      "# minBytes %zu maxBytes %zu step: %zu(%s) warmup iters: %d iters: %d "
      "validation: %d blocking: %d per-call: %d out-of-place-only: %d\n",
      o.min_bytes, o.max_bytes, o.step_factor > 1 ? o.step_factor : o.step_bytes,
      o.step_factor > 1 ? "factor" : "bytes", o.warmup, o.iters, o.check ? 1 : 0,
      o.blocking ? 1 : 0, o.per_call ? 1 : 0, o.out_of_place_only ? 1 : 0);
  std::printf("#\n# Using ranks\n");
  for (int r = 0; r < nranks; ++r) {
    all[r].host[sizeof all[r].host - 1] = '\0';
    std::printf("#  Rank %2d Pid %6d on %10s\n", r, static_cast<int>(all[r].pid), all[r].host);
  }
  // Rank 0's links, one line per distinct kind (with verbs: device, port, GID and MTU), so a
  // result can be told from one measured over another transport.
  std::vector<std::pair<std::string, int>> links;
  for (int r = 1; r < nranks; ++r) {
    char via[256] = "";
    if (bcclCommGetPeerTransport(comm, r, via, sizeof via) != bcclSuccess) continue;
    auto it =
        std::find_if(links.begin(), links.end(), [&](const auto& l) { return l.first == via; });
    if (it == links.end()) {
      links.emplace_back(via, 1);
    } else {
      ++it->second;
    }
  }
  for (const auto& [via, peers] : links)
    std::printf("# Transport: %s (%d peer%s of rank 0)\n", via.c_str(), peers,
                peers == 1 ? "" : "s");
  PrintTableHeader();
  std::fflush(stdout);
}

}  // namespace

int PerfMain(int argc, char** argv, const Collective& coll) {
  Options opt;
  const int parsed = ParseArgs(argc, argv, &opt);
  if (parsed == 1) return 0;
  if (parsed != 0) return parsed;

  bcclComm_t comm = nullptr;
  PERF_CHECK(bcclCommInitFromEnv(&comm, nullptr));
  g_comm = comm;
  int rank = 0, nranks = 0;
  PERF_CHECK(bcclCommUserRank(comm, &rank));
  PERF_CHECK(bcclCommCount(comm, &nranks));
  g_rank = rank;

  if (coll.UsesRoot() && opt.root >= nranks) {
    if (rank == 0) {
      std::fprintf(stderr, "%s: root %d out of range for %d ranks\n", argv[0], opt.root, nranks);
    }
    PERF_CHECK(bcclCommDestroy(comm));
    return 2;
  }
  bcclStream_t stream = nullptr;
  if (!opt.blocking) PERF_CHECK(bcclStreamCreate(&stream));

  PrintHeader(coll, opt, comm, rank, nranks, argv[0]);

  const std::vector<size_t> sizes = Sizes(opt);
  std::vector<std::vector<size_t>> counts;
  for (bcclDataType_t t : opt.dtypes) {
    counts.push_back(Counts(sizes, Info(t).size * coll.SizeElemsPerCount(nranks)));
  }
  // Every rank must agree to go on, or the ones that could allocate would wait for the others.
  Runner runner(coll, opt, comm, rank, nranks, stream);
  int32_t ok = runner.AllocateFor(counts) ? 1 : 0;
  if (!ok) std::fprintf(stderr, "rank %d: cannot allocate buffers for the largest size\n", rank);
  PERF_CHECK(bcclAllReduce(&ok, &ok, 1, bcclInt32, bcclMin, comm, nullptr));
  if (!ok) {
    if (stream) PERF_CHECK(bcclStreamDestroy(stream));
    PERF_CHECK(bcclCommDestroy(comm));
    return 1;
  }

  const std::vector<bcclRedOp_t> no_op{bcclSum};
  const std::vector<bcclRedOp_t>& ops = coll.UsesOp() ? opt.ops : no_op;
  for (size_t t = 0; t < opt.dtypes.size(); ++t) {
    for (bcclRedOp_t op : ops) {
      const Inputs in(opt.dtypes[t], coll.UsesOp(), op, rank, nranks, opt.root);
      for (size_t count : counts[t]) runner.Row(opt.dtypes[t], op, in, count);
    }
  }

  if (rank == 0) {
    std::printf("# Out of bounds values : %" PRId64 " %s\n", runner.total_wrong(),
                runner.total_wrong() ? "FAILED" : "OK");
    std::printf("# Avg bus bandwidth    : %g \n#\n", runner.avg_busbw());
    std::fflush(stdout);
  }
  if (stream) PERF_CHECK(bcclStreamDestroy(stream));
  PERF_CHECK(bcclCommDestroy(comm));
  g_comm = nullptr;
  return runner.total_wrong() ? 1 : 0;
}

}  // namespace bcclperf
