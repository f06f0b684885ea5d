// The multipath layer without a network: the chunk scheduler and rate estimator in a simulated
// pair of paths (shares follow rates, a slowed path loses its share quickly, the tail does not
// wait for a slow path), the send and receive bookkeeping (chunking, completion, resend,
// duplicates delivered once, early chunks), and whole connections over socket pairs where one
// path is cut mid-transfer and later comes back.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <memory>
#include <numeric>
#include <vector>

#include "core/deadline.h"
#include "support/scoped_env.h"
#include "transport/multipath/chunk_scheduler.h"
#include "transport/multipath/path_rate.h"
#include "transport/multipath/recv_assembly.h"
#include "transport/multipath/send_tracker.h"
#include "transport/tcp/multipath_connection.h"
#include "transport/tcp/path_config.h"

namespace bccl {
namespace {

constexpr uint64_t kKiB = 1024, kMiB = 1024 * 1024;
constexpr int64_t kMs = 1000000;

// ---- the scheduler and the rate estimator in a simulated network ---------------------------

// Paths as FIFO servers of a given rate with a fixed round trip; the sender assigns chunks with
// pickPath and learns rates only from the acknowledgements, as the real connection does.
struct SimPath {
  double rate;                     // bytes/s
  double slowAt = -1, slowTo = 0;  // from time slowAt (s) on, the rate is slowTo
  double busyUntil = 0;
  std::deque<std::pair<double, uint64_t>> acks;  // (arrival time, bytes)
  std::deque<double> sent;
  uint64_t inflight = 0, bytes = 0, lateBytes = 0;
  PathRate est{100 * kMs};
};

struct SimResult {
  double seconds;
  std::vector<uint64_t> bytes;      // per path, whole run
  std::vector<uint64_t> lateBytes;  // per path, assigned after `lateFrom`
  std::vector<double> estimates;    // final rate estimates
};

SimResult simulate(std::vector<SimPath> paths, uint64_t total, uint64_t chunk, double rttSec,
                   double lateFrom = 1e9) {
  double t = 0;
  uint64_t remaining = total;
  std::vector<PathLoad> loads(paths.size());
  for (;;) {
    for (SimPath& p : paths)
      while (!p.acks.empty() && p.acks.front().first <= t + 1e-12) {
        const uint64_t b = p.acks.front().second;
        p.acks.pop_front();
        const double sentAt = p.sent.front();
        p.sent.pop_front();
        p.inflight -= b;
        p.est.onAck(b, static_cast<int64_t>(sentAt * 1e9), static_cast<int64_t>(t * 1e9),
                    p.inflight > 0, remaining == 0);
      }
    for (;;) {
      if (remaining == 0) break;
      for (size_t i = 0; i < paths.size(); ++i) {
        loads[i].up = loads[i].ready = true;
        loads[i].inflight = paths[i].inflight;
        loads[i].rate = paths[i].est.bytesPerSec();
        loads[i].window = pathWindow(loads[i].rate, paths[i].est.minRttNs(), 4 * chunk, 32 * kMiB);
      }
      const uint64_t c = std::min(chunk, remaining);
      const int pick = pickPath(loads, c, remaining);
      if (pick < 0) break;
      SimPath& p = paths[static_cast<size_t>(pick)];
      const double rate = (p.slowAt >= 0 && t >= p.slowAt) ? p.slowTo : p.rate;
      p.busyUntil = std::max(t, p.busyUntil) + static_cast<double>(c) / rate;
      p.acks.push_back({p.busyUntil + rttSec, c});
      p.sent.push_back(t);
      p.inflight += c;
      p.bytes += c;
      if (t >= lateFrom) p.lateBytes += c;
      remaining -= c;
    }
    double next = 1e18;
    for (const SimPath& p : paths)
      if (!p.acks.empty()) next = std::min(next, p.acks.front().first);
    if (next == 1e18) break;
    t = next;
  }
  SimResult r;
  r.seconds = t;
  for (const SimPath& p : paths) {
    r.bytes.push_back(p.bytes);
    r.lateBytes.push_back(p.lateBytes);
    r.estimates.push_back(p.est.bytesPerSec());
  }
  return r;
}

std::vector<SimPath> twoPaths(double a, double b) {
  SimPath p, q;
  p.rate = a;
  q.rate = b;
  return {p, q};
}

TEST(ChunkScheduler, EqualPathsShareEvenlyAndFinishTogether) {
  const double r = 50e6;
  const uint64_t total = 256 * kMiB;
  SimResult s = simulate(twoPaths(r, r), total, 256 * kKiB, 0.001);
  const double ideal = static_cast<double>(total) / (2 * r);
  EXPECT_LT(s.seconds, ideal * 1.05) << "ideal " << ideal;
  EXPECT_NEAR(static_cast<double>(s.bytes[0]) / total, 0.5, 0.02);
}

TEST(ChunkScheduler, QuarterRatePathCarriesAFifthAndNothingWaitsForIt) {
  const double r = 50e6;
  const uint64_t total = 256 * kMiB;
  SimResult s = simulate(twoPaths(r, r / 4), total, 256 * kKiB, 0.001);
  const double ideal = static_cast<double>(total) / (1.25 * r);
  // A static even split would take total / 2 / (r/4) = 1.6x the ideal.
  EXPECT_LT(s.seconds, ideal * 1.05) << "ideal " << ideal;
  EXPECT_NEAR(static_cast<double>(s.bytes[1]) / total, 0.2, 0.03);
  EXPECT_NEAR(s.estimates[1], r / 4, r / 4 * 0.15);
}

TEST(ChunkScheduler, LongRoundTripStillFillsBothPaths) {
  // 30 ms round trip: the windows must cover the bandwidth-delay product.
  const double r = 50e6;
  const uint64_t total = 256 * kMiB;
  SimResult s = simulate(twoPaths(r, r), total, 256 * kKiB, 0.030);
  const double ideal = static_cast<double>(total) / (2 * r) + 0.030;
  EXPECT_LT(s.seconds, ideal * 1.1) << "ideal " << ideal;
}

TEST(ChunkScheduler, SlowedPathLosesItsShareWithinAFractionOfASecond) {
  const double r = 50e6;
  std::vector<SimPath> paths = twoPaths(r, r);
  paths[1].slowAt = 1.0;
  paths[1].slowTo = r / 4;
  // Runs ~2.5 s; counts what each path was given from 0.5 s after the slow-down on.
  SimResult s = simulate(paths, 200 * kMiB, 256 * kKiB, 0.002, 1.5);
  const double lateShare =
      static_cast<double>(s.lateBytes[1]) / static_cast<double>(s.lateBytes[0] + s.lateBytes[1]);
  EXPECT_NEAR(lateShare, 0.2, 0.04);
  EXPECT_NEAR(s.estimates[1], r / 4, r / 4 * 0.15);
}

// `n` paths, up and ready, each with a window of `window` bytes and nothing measured yet.
std::vector<PathLoad> readyPaths(size_t n, uint64_t window) {
  std::vector<PathLoad> l(n);
  for (PathLoad& p : l) {
    p.up = p.ready = true;
    p.window = window;
  }
  return l;
}

TEST(ChunkScheduler, SmallMessageTakesTheIdleFastestPath) {
  std::vector<PathLoad> l = readyPaths(3, 4 * kMiB);
  l[0].rate = 10e6;
  l[1].rate = 40e6;
  l[2].rate = 40e6;
  EXPECT_EQ(pickPath(l, 8, 8), 1);  // ties go to the lowest index
  l[1].inflight = 1 * kMiB;         // busy: the other fast one delivers first
  EXPECT_EQ(pickPath(l, 8, 8), 2);
  l[2].up = false;
  l[1].inflight = 0;
  EXPECT_EQ(pickPath(l, 8, 8), 1);
  // Nothing measured yet: all alike, lowest index.
  for (PathLoad& p : l) p.rate = 0;
  l[2].up = true;
  EXPECT_EQ(pickPath(l, 8, 8), 0);
}

TEST(ChunkScheduler, TailWaitsForTheFastPathButABacklogUsesEveryPath) {
  std::vector<PathLoad> l = readyPaths(2, 2 * kMiB);
  l[0].rate = 100e6;
  l[1].rate = 10e6;
  l[0].inflight = 2 * kMiB;  // full
  // The last chunk: the slow path would deliver it after the fast one drains and sends it.
  EXPECT_EQ(pickPath(l, 256 * kKiB, 256 * kKiB), -1);
  // Plenty left: the slow path helps.
  EXPECT_EQ(pickPath(l, 256 * kKiB, 64 * kMiB), 1);
  // A path without room or not ready takes nothing.
  l[1].inflight = 2 * kMiB;
  EXPECT_EQ(pickPath(l, 256 * kKiB, 64 * kMiB), -1);
  l[1].inflight = 0;
  l[1].ready = false;
  EXPECT_EQ(pickPath(l, 256 * kKiB, 64 * kMiB), -1);
}

TEST(PathRate, AppLimitedSamplesOnlyRaiseTheEstimate) {
  PathRate r(100 * kMs);
  int64_t t = 0;
  for (int i = 0; i < 200; ++i) {  // 1 MB per 10 ms = 100 MB/s, backlogged
    t += 10 * kMs;
    r.onAck(1000000, t - 5 * kMs, t, true, false);
  }
  ASSERT_NEAR(r.bytesPerSec(), 100e6, 5e6);
  for (int i = 0; i < 100; ++i) {  // the sender offers a tenth of that
    t += 10 * kMs;
    r.onAck(100000, t - 5 * kMs, t, true, true);
  }
  EXPECT_NEAR(r.bytesPerSec(), 100e6, 5e6);
  EXPECT_EQ(r.minRttNs(), 5 * kMs);
}

TEST(PathWindow, CoversTheBandwidthDelayProduct) {
  // 50 MB/s and a 30 ms round trip: 1.5 MB in flight at least.
  EXPECT_GE(pathWindow(50e6, 30 * kMs, kMiB, 64 * kMiB), 1500000u);
  EXPECT_EQ(pathWindow(0, 0, kMiB, 64 * kMiB), kMiB);      // unmeasured: the floor
  EXPECT_EQ(pathWindow(1e3, kMs, kMiB, 64 * kMiB), kMiB);  // slow: the floor
}

// ---- send and receive bookkeeping -------------------------------------------------------------

TEST(SendTracker, CutsLargeMessagesCopiesSmallOnesAndResends) {
  SendTracker t(1024);
  std::vector<char> big(1000000, 'x');
  char small[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  t.post(small, sizeof(small), 11);
  t.post(big.data(), big.size(), 22);
  small[0] = 99;  // a copied message may be reused at once
  EXPECT_EQ(t.backlog(), big.size() + 8);
  std::vector<uint64_t> done;
  ChunkRef a = t.peek(256 * kKiB);
  EXPECT_EQ(a.len, 8u);
  t.take(a);
  EXPECT_EQ(t.payload(a)[0], 1);
  t.written(a, &done);
  EXPECT_EQ(done, std::vector<uint64_t>{11});
  std::vector<ChunkRef> chunks;
  while (t.hasWork()) {
    ChunkRef c = t.peek(256 * kKiB);
    t.take(c);
    t.written(c, &done);
    chunks.push_back(c);
  }
  ASSERT_EQ(chunks.size(), 4u);
  EXPECT_EQ(chunks[3].len, big.size() - 3 * 256 * kKiB);
  EXPECT_EQ(done.size(), 1u);  // the large one waits for acknowledgements
  t.resend(chunks[1]);
  EXPECT_EQ(t.backlog(), chunks[1].len);
  ChunkRef again = t.peek(64);  // resent whole, whatever the chunk size now
  EXPECT_EQ(again.offset, chunks[1].offset);
  EXPECT_EQ(again.len, chunks[1].len);
  t.take(again);
  for (const ChunkRef& c : chunks) t.acked(c, &done);
  t.acked(a, &done);
  EXPECT_EQ(done, (std::vector<uint64_t>{11, 22}));
  EXPECT_TRUE(t.empty());
}

TEST(PathFlight, AcknowledgementsRetireInOrderAndDrainReturnsTheRest) {
  PathFlight f;
  for (uint64_t i = 0; i < 5; ++i) f.sent(ChunkRef{i, 0, 100}, static_cast<int64_t>(i));
  std::vector<PathFlight::Entry> acked;
  f.ackUpTo(3, &acked);
  EXPECT_EQ(acked.size(), 3u);
  EXPECT_EQ(f.bytes(), 200u);
  f.ackUpTo(3, &acked);  // repeated: nothing new
  EXPECT_EQ(acked.size(), 3u);
  std::vector<ChunkRef> rest = f.drain();
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].seq, 3u);
  EXPECT_TRUE(f.empty());
}

RecvTarget sumInto(int32_t* dst, const int32_t* operand) {
  RecvTarget t;
  t.dst = reinterpret_cast<char*>(dst);
  t.operand = reinterpret_cast<const char*>(operand);
  t.dtype = bcclInt32;
  t.op = bcclSum;
  t.elemSize = 4;
  return t;
}

std::vector<char> bytesOf(const std::vector<int32_t>& v, size_t from, size_t n) {
  const char* p = reinterpret_cast<const char*>(v.data()) + from;
  return std::vector<char>(p, p + n);
}

TEST(RecvAssembly, DuplicatesOfAReductionAreAppliedOnce) {
  // In place: dst == operand, so a chunk reduced twice would be visibly wrong.
  std::vector<int32_t> acc(64, 1), incoming(64);
  std::iota(incoming.begin(), incoming.end(), 0);
  RecvAssembly a;
  std::vector<uint64_t> done;
  a.post(sumInto(acc.data(), acc.data()), 256, 7);
  // Chunk [128, 256) arrives staged on path 1 first, then again on path 0 (a resend).
  ASSERT_TRUE(a.staged(0, 256, 128, bytesOf(incoming, 128, 128), &done).isOk());
  auto p = a.begin(0, 0, 256, 128, 128);
  ASSERT_TRUE(p.isOk());
  EXPECT_EQ(p.value().mode, RecvAssembly::Mode::kDiscard);
  // Chunk [0, 128): path 0 delivers half, fails; the resend on path 1 delivers the rest.
  p = a.begin(0, 0, 256, 0, 128);
  ASSERT_EQ(p.value().mode, RecvAssembly::Mode::kDeliver);
  const RecvTarget* t = a.owned(0, 0, 0);
  ASSERT_NE(t, nullptr);
  std::vector<char> first = bytesOf(incoming, 0, 128);
  t->deliver(0, first.data(), 64);
  a.advance(0, 0, 64);
  a.abandon(0);
  p = a.begin(1, 0, 256, 0, 128);
  ASSERT_EQ(p.value().mode, RecvAssembly::Mode::kDeliver);
  EXPECT_EQ(p.value().skip, 64u);
  t = a.owned(1, 0, 0);
  t->deliver(64, first.data() + 64, 64);
  a.advance(0, 0, 128);
  a.finish(1, 0, 0, &done);
  EXPECT_EQ(done, std::vector<uint64_t>{7});
  for (int i = 0; i < 64; ++i) EXPECT_EQ(acc[i], 1 + i) << i;
  EXPECT_FALSE(a.expecting());
}

TEST(RecvAssembly, ACopyThatFinishesFirstWinsAndTheSlowerOneIsDiscarded) {
  std::vector<int32_t> dst(32, 0), in(32, 5);
  RecvAssembly a;
  std::vector<uint64_t> done;
  RecvTarget plain;
  plain.dst = reinterpret_cast<char*>(dst.data());
  a.post(plain, 128, 1);
  ASSERT_EQ(a.begin(0, 0, 128, 0, 128).value().mode, RecvAssembly::Mode::kDeliver);
  a.advance(0, 0, 32);  // path 0 is slow: 32 bytes so far
  // The same chunk on path 1 is staged (path 0 owns it) and completes first.
  ASSERT_EQ(a.begin(1, 0, 128, 0, 128).value().mode, RecvAssembly::Mode::kStage);
  ASSERT_TRUE(a.staged(0, 128, 0, bytesOf(in, 0, 128), &done).isOk());
  EXPECT_EQ(done, std::vector<uint64_t>{1});
  EXPECT_EQ(a.owned(0, 0, 0), nullptr);  // path 0 must discard the rest
  for (int i = 8; i < 32; ++i) EXPECT_EQ(dst[i], 5);
}

TEST(RecvAssembly, EarlyChunksWaitForTheirPostAndSizesAreChecked) {
  std::vector<int32_t> dst(16, 0), in(16, 3);
  RecvAssembly a;
  std::vector<uint64_t> done;
  ASSERT_EQ(a.begin(0, 0, 64, 0, 64).value().mode, RecvAssembly::Mode::kStage);
  ASSERT_TRUE(a.staged(0, 64, 0, bytesOf(in, 0, 64), &done).isOk());
  EXPECT_EQ(a.stagedBytes(), 64u);
  RecvTarget plain;
  plain.dst = reinterpret_cast<char*>(dst.data());
  a.post(plain, 64, 5);
  ASSERT_TRUE(a.takeReady(&done).isOk());
  EXPECT_EQ(done, std::vector<uint64_t>{5});
  EXPECT_EQ(dst[15], 3);
  a.post(plain, 64, 6);
  auto bad = a.begin(0, 1, 128, 0, 128);
  EXPECT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("mismatched counts"), std::string::npos);
}

// ---- which local addresses the paths use --------------------------------------------------

using bccltest::ScopedEnv;

TEST(PathConfig, OnePathPerListedAddressCyclingWhenAskedForMore) {
  StatusOr<SockAddr> route = parseHostPort("127.0.0.1:0");
  ASSERT_TRUE(route.isOk());
  {
    ScopedEnv ifs("BCCL_SOCKET_IFNAME", "127.0.0.2,no-such-interface,127.0.0.3");
    StatusOr<std::vector<SockAddr>> a = localPathAddresses(route.value());
    ASSERT_TRUE(a.isOk()) << a.status().message();
    ASSERT_EQ(a.value().size(), 2u);  // the unusable entry is skipped (with a WARN)
    EXPECT_EQ(a.value()[1].toString(), "127.0.0.3:0");
    ScopedEnv n("BCCL_NUM_PATHS", "3");
    a = localPathAddresses(route.value());
    ASSERT_EQ(a.value().size(), 3u);
    EXPECT_EQ(a.value()[2].toString(), "127.0.0.2:0");
  }
  {
    // Unset: one path from the rendezvous route, exactly as with a single socket; more paths
    // are more sockets over it.
    StatusOr<std::vector<SockAddr>> a = localPathAddresses(route.value());
    ASSERT_EQ(a.value().size(), 1u);
    ScopedEnv n("BCCL_NUM_PATHS", "4");
    a = localPathAddresses(route.value());
    ASSERT_EQ(a.value().size(), 4u);
    EXPECT_EQ(a.value()[3].toString(), "127.0.0.1:0");
  }
  ScopedEnv bad("BCCL_NUM_PATHS", "9");
  EXPECT_FALSE(localPathAddresses(route.value()).isOk());
}

// ---- whole connections over socket pairs -----------------------------------------------------

struct FakeReconnector : PathReconnector {
  std::vector<std::pair<int, int>> downs;  // (path, generation)
  void pathDown(int, int path, uint32_t generation) override {
    downs.push_back({path, static_cast<int>(generation)});
  }
};

struct Pair {
  std::vector<int> a, b;  // the two ends of each path
};

Pair socketPairs(int n) {
  Pair p;
  for (int i = 0; i < n; ++i) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    p.a.push_back(sv[0]);
    p.b.push_back(sv[1]);
  }
  return p;
}

MultipathOptions testOptions() {
  MultipathOptions o;
  o.chunkBytes = 64 * kKiB;
  o.minWindow = 256 * kKiB;
  o.maxWindow = 1 * kMiB;
  o.stallMs = 200;
  return o;
}

// Progresses both ends until `want` tokens completed on each, or fails after 20 s. `between`
// runs after every round (to cut a path mid-transfer).
void drive(MultipathConnection& x, MultipathConnection& y, size_t wantX, size_t wantY,
           const std::function<void(size_t)>& between = nullptr) {
  std::vector<uint64_t> doneX, doneY;
  const Deadline deadline = Deadline::afterMs(20000);
  size_t rounds = 0;
  while (doneX.size() < wantX || doneY.size() < wantY) {
    ASSERT_FALSE(deadline.expired()) << doneX.size() << "/" << wantX << " and " << doneY.size()
                                     << "/" << wantY << " operations done";
    Status sx = x.progress(&doneX);
    Status sy = y.progress(&doneY);
    ASSERT_TRUE(sx.isOk()) << sx.message();
    ASSERT_TRUE(sy.isOk()) << sy.message();
    if (between) between(++rounds);
  }
}

// Both directions at once, reductions included, over `paths` paths; `between` may cut paths.
void exchange(MultipathConnection& x, MultipathConnection& y, size_t elems,
              const std::function<void(size_t)>& between = nullptr) {
  std::vector<int32_t> sx(elems), sy(elems), rx(elems, 0), ry(elems, 0);
  for (size_t i = 0; i < elems; ++i) {
    sx[i] = static_cast<int32_t>(i * 3 + 1);
    sy[i] = static_cast<int32_t>(i * 7 + 2);
  }
  std::vector<int32_t> accY(elems, 10);  // y reduces x's data into accY in place
  RecvTarget plain;
  plain.dst = reinterpret_cast<char*>(rx.data());
  plain.elemSize = 4;
  ASSERT_TRUE(x.postSend(sx.data(), elems * 4, 1).isOk());
  ASSERT_TRUE(x.postRecv(plain, elems * 4, 2).isOk());
  ASSERT_TRUE(y.postRecv(sumInto(accY.data(), accY.data()), elems * 4, 3).isOk());
  ASSERT_TRUE(y.postSend(sy.data(), elems * 4, 4).isOk());
  drive(x, y, 2, 2, between);
  for (size_t i = 0; i < elems; ++i) {
    ASSERT_EQ(rx[i], sy[i]) << i;
    ASSERT_EQ(accY[i], sx[i] + 10) << i;
  }
}

TEST(MultipathConnection, SpreadsLargeMessagesAndKeepsSmallOnesWhole) {
  Pair p = socketPairs(3);
  FakeReconnector ra, rb;
  MultipathConnection x(1, "rank 1", p.a, testOptions(), &ra);
  MultipathConnection y(0, "rank 0", p.b, testOptions(), &rb);
  exchange(x, y, 1);
  exchange(x, y, 2 * 1000 * 1000 + 3);  // 8 MB, not a multiple of the chunk
  int used = 0;
  for (int i = 0; i < 3; ++i) used += x.pathBytesSent(i) > 0 ? 1 : 0;
  EXPECT_EQ(used, 3);
  for (int i = 0; i < 50; ++i) exchange(x, y, 2);  // many small ones, in order
  EXPECT_TRUE(ra.downs.empty());
}

TEST(MultipathConnection, CutPathMidTransferIsResentOverTheOthersAndComesBack) {
  Pair p = socketPairs(2);
  FakeReconnector ra, rb;
  MultipathConnection x(1, "rank 1", p.a, testOptions(), &ra);
  MultipathConnection y(0, "rank 0", p.b, testOptions(), &rb);
  // Cut path 1 (both ends see it fail) once some of the 16 MB is under way, the way fault
  // injection does (the highest open path).
  exchange(x, y, 4 * 1000 * 1000, [&](size_t round) {
    if (round == 20) {
      EXPECT_TRUE(x.failOnePath());
    }
  });
  EXPECT_FALSE(x.pathUp(1));
  EXPECT_FALSE(y.pathUp(1));
  ASSERT_EQ(ra.downs.size(), 1u);
  EXPECT_EQ(ra.downs[0], std::make_pair(1, 0));
  // Works on one path meanwhile.
  exchange(x, y, 300000);
  // The path manager's job, by hand: a new socket for path 1, generation 1, on both ends.
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  x.offerPath(1, 1, sv[0]);
  y.offerPath(1, 1, sv[1]);
  const uint64_t before = x.pathBytesSent(1);
  exchange(x, y, 4 * 1000 * 1000);
  EXPECT_TRUE(x.pathUp(1));
  EXPECT_GT(x.pathBytesSent(1), before + kMiB) << "the path came back but carries nothing";
  // A stale offer (an older generation) is refused.
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  x.offerPath(1, 1, sv[0]);
  close(sv[1]);
  exchange(x, y, 1000);
  EXPECT_TRUE(x.pathUp(1));
}

TEST(MultipathConnection, SilentPathIsDroppedWhileTheOtherAnswers) {
  // Path 1 leads into a black hole at both ends (sockets nobody reads): no error, only silence.
  Pair p = socketPairs(3);
  FakeReconnector ra, rb;
  MultipathConnection x(1, "rank 1", {p.a[0], p.a[1]}, testOptions(), &ra);
  MultipathConnection y(0, "rank 0", {p.b[0], p.b[2]}, testOptions(), &rb);
  const int64_t t0 = nowNs();
  exchange(x, y, 4 * 1000 * 1000);
  const int64_t ms = (nowNs() - t0) / 1000000;
  EXPECT_FALSE(x.pathUp(1));
  EXPECT_FALSE(y.pathUp(1));
  EXPECT_TRUE(x.pathUp(0));
  // The deadline (200 ms), plus the probe, plus the transfer.
  EXPECT_LT(ms, 5000);
  EXPECT_EQ(ra.downs.size(), 1u);
  close(p.b[1]);
  close(p.a[2]);
}

TEST(MultipathConnection, APauseBetweenOperationsIsNotSilence) {
  Pair p = socketPairs(2);
  FakeReconnector ra, rb;
  MultipathConnection x(1, "rank 1", p.a, testOptions(), &ra);
  MultipathConnection y(0, "rank 0", p.b, testOptions(), &rb);
  // Small messages: acknowledged lazily, so they stay unacknowledged through the pause.
  for (int i = 0; i < 5; ++i) exchange(x, y, 2);
  usleep(3 * testOptions().stallMs * 1000);
  exchange(x, y, 2 * 1000 * 1000);
  for (int i = 0; i < 5; ++i) exchange(x, y, 2);
  EXPECT_TRUE(x.pathUp(0));
  EXPECT_TRUE(x.pathUp(1));
  EXPECT_TRUE(ra.downs.empty());
  EXPECT_TRUE(rb.downs.empty());
}

TEST(MultipathConnection, LosingEveryPathFailsTheConnectionBlamingThePeer) {
  Pair p = socketPairs(2);
  FakeReconnector ra, rb;
  MultipathConnection x(1, "rank 1", p.a, testOptions(), &ra);
  MultipathConnection y(0, "rank 0", p.b, testOptions(), &rb);
  exchange(x, y, 1000);
  std::vector<char> buf(1000);
  RecvTarget plain;
  plain.dst = buf.data();
  ASSERT_TRUE(x.postRecv(plain, buf.size(), 9).isOk());
  for (int fd : p.b) shutdown(fd, SHUT_RDWR);
  std::vector<uint64_t> done;
  Status st;
  const Deadline deadline = Deadline::afterMs(5000);
  while (st.isOk() && !deadline.expired()) st = x.progress(&done);
  ASSERT_FALSE(st.isOk());
  EXPECT_EQ(st.failedPeer(), 1);
  EXPECT_NE(st.message().find("every tcp path failed"), std::string::npos) << st.message();
}

TEST(MultipathConnection, MismatchedSizesAreReportedNotResent) {
  Pair p = socketPairs(2);
  MultipathConnection x(1, "rank 1", p.a, testOptions(), nullptr);
  MultipathConnection y(0, "rank 0", p.b, testOptions(), nullptr);
  std::vector<char> out(4096, 1), in(1024);
  RecvTarget plain;
  plain.dst = in.data();
  ASSERT_TRUE(x.postSend(out.data(), out.size(), 1).isOk());
  ASSERT_TRUE(y.postRecv(plain, in.size(), 2).isOk());
  std::vector<uint64_t> done;
  Status st;
  const Deadline deadline = Deadline::afterMs(5000);
  while (st.isOk() && !deadline.expired()) {
    ASSERT_TRUE(x.progress(&done).isOk());
    st = y.progress(&done);
  }
  EXPECT_EQ(st.code(), bcclInvalidUsage);
  EXPECT_NE(st.message().find("4096 bytes where 1024"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace bccl
