// The correctness matrix of the public API: every collective x dtype x op x rank count x
// element count x in/out-of-place x transport x root, checked bit for bit against a reference
// computed here. One test per (transport, nranks, collective), ordered so that consecutive
// tests share one set of communicators; the set is rebuilt only when nranks or transport
// changes, or after a library call failed (the old set may then be unusable).
#include <bccl/bccl.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "support/data.h"
#include "support/thread_ranks.h"
#ifdef BCCL_TEST_VERBS
#include "support/verbs_probe.h"
#endif

namespace bccltest {
namespace {

enum class Coll {
  AllReduce,
  AllGather,
  ReduceScatter,
  Broadcast,
  Reduce,
  AllToAll,
  SendRecv,
  Barrier
};
const char* CollName(Coll c) {
  static const char* kNames[] = {"AllReduce", "AllGather", "ReduceScatter", "Broadcast",
                                 "Reduce",    "AllToAll",  "SendRecv",      "Barrier"};
  return kNames[static_cast<int>(c)];
}

struct MatrixParam {
  std::string transport;
  int nranks;
  Coll coll;
};

void PrintTo(const MatrixParam& p, std::ostream* os) {
  *os << CollName(p.coll) << " on " << p.nranks << " ranks over " << p.transport;
}

std::vector<MatrixParam> AllParams() {
  std::vector<MatrixParam> out;
#ifdef BCCL_TEST_UCX
  // UCX picks its wire from UCX_TLS, which ctest sets per entry.
  const std::vector<const char*> transports{"shm", "tcp", "ucx"};
#else
  const std::vector<const char*> transports{"shm", "tcp"};
#endif
  for (const char* t : transports) {
    for (int n : {1, 2, 3, 4, 5, 8}) {
      for (int c = 0; c <= static_cast<int>(Coll::Barrier); ++c) {
        out.push_back({t, n, static_cast<Coll>(c)});
      }
    }
  }
#ifdef BCCL_TEST_VERBS
  // Verbs runs on soft-RoCE in an emulated VM (tests/verbs/): 2 to 4 ranks cover rings, trees
  // and uneven splits there without costing many minutes.
  for (int n : {2, 3, 4}) {
    for (int c = 0; c <= static_cast<int>(Coll::Barrier); ++c) {
      out.push_back({"verbs", n, static_cast<Coll>(c)});
    }
  }
#endif
  return out;
}

// 100003 is prime and spans many chunks of any plausible pipeline. At 8 ranks the collectives
// whose buffers hold nranks * count elements use the smaller prime 10007, keeping the suite
// (and its sanitizer run) within its time budget.
size_t LargeCount(int nranks, Coll coll) {
  if (const char* env = std::getenv("BCCL_TEST_LARGE_COUNT")) return std::strtoul(env, nullptr, 10);
  const bool scalesWithRanks =
      coll == Coll::AllGather || coll == Coll::ReduceScatter || coll == Coll::AllToAll;
  return nranks >= 8 && scalesWithRanks ? 10007 : 100003;
}

std::vector<int> Roots(int nranks) {
  return nranks == 1 ? std::vector<int>{0} : std::vector<int>{0, nranks - 1};
}

// The one live set of communicators, shared by consecutive tests with the same shape.
class RanksCache {
 public:
  static ThreadRanks* Get(const std::string& transport, int nranks) {
    auto& set = Slot();
    if (set &&
        (set->nranks() != nranks || set->options().transports != transport || set->poisoned())) {
      Release();
    }
    if (!set) {
      ThreadRanksOptions opts = RanksOn(transport, nranks);
      opts.withStream = true;
      set = std::make_unique<ThreadRanks>(opts);
      if (!set->initError().empty()) {
        ADD_FAILURE() << "cannot create " << nranks << " ranks over " << transport << ":"
                      << set->initError();
        set.reset();
      }
    }
    return set.get();
  }
  static void Release() {
    auto& set = Slot();
    if (!set) return;
    EXPECT_TRUE(set->Shutdown());
    set.reset();
  }

 private:
  static std::unique_ptr<ThreadRanks>& Slot() {
    static std::unique_ptr<ThreadRanks> set;
    return set;
  }
};

class ReleaseRanksAtEnd : public ::testing::Environment {
 public:
  void TearDown() override { RanksCache::Release(); }
};
const auto* const kReleaser = ::testing::AddGlobalTestEnvironment(new ReleaseRanksAtEnd);
#ifdef BCCL_TEST_VERBS
// Probes before any rank thread exists (the probe forks).
const bool kVerbsProbed = (AddVerbsProbeEnvironment(), true);
#endif

void Expect(RankEnv& e, const std::string& what, const std::string& diff) {
  if (!diff.empty()) e.Fail(what + ": " + diff);
}

void ExpectGuards(RankEnv& e, const char* name, const GuardedBuffer& b) {
  Expect(e, name, b.CheckGuards());
}

// Cases of 7 elements run on each rank's stream, so every collective, dtype and op is also
// checked enqueued (and synchronized) rather than only as a blocking call.
constexpr size_t kStreamCount = 7;
bcclStream_t StreamFor(const RankEnv& e, size_t count) {
  return count == kStreamCount ? e.stream : nullptr;
}
bcclResult_t Sync(const RankEnv& e, size_t count, bcclResult_t res) {
  bcclStream_t s = StreamFor(e, count);
  if (res != bcclSuccess || s == nullptr) return res;
  return bcclStreamSynchronize(s);
}

std::vector<unsigned char> PatternBytes(bcclDataType_t dt, int64_t id, size_t count) {
  std::vector<unsigned char> v(count * TypeSize(dt));
  FillPattern(dt, id, count, v.data());
  return v;
}

std::string Label(Coll c, bcclDataType_t dt, const char* op, size_t count, bool inPlace,
                  int root = -1) {
  std::string s = std::string(CollName(c)) + " " + TypeName(dt);
  if (op) s += std::string(" ") + op;
  s += " count=" + std::to_string(count) + (inPlace ? " in-place" : " out-of-place");
  if (count == kStreamCount) s += " on a stream";
  if (root >= 0) s += " root=" + std::to_string(root);
  return s;
}

class CollectivesMatrix : public ::testing::TestWithParam<MatrixParam> {
 protected:
  // Runs one case; false once too many cases failed, so a broken collective reports a handful
  // of cases instead of hundreds.
  bool Case(const std::string& label, const std::function<void(RankEnv&)>& fn) {
    ThreadRanks* ranks = RanksCache::Get(GetParam().transport, GetParam().nranks);
    if (ranks == nullptr) return false;
    ::testing::AssertionResult res = ranks->Run(label, fn);
    if (!res) ADD_FAILURE() << res.message();
    if (!res && ++failedCases_ >= 6) {
      ADD_FAILURE() << "stopping " << CollName(GetParam().coll) << " after 6 failing cases";
      return false;
    }
    return true;
  }
  int n() const { return GetParam().nranks; }
  std::vector<size_t> Counts() const { return {0, 1, 7, LargeCount(n(), GetParam().coll)}; }

  void RunAllReduce();
  void RunAllGather();
  void RunReduceScatter();
  void RunBroadcast();
  void RunReduce();
  void RunAllToAll();
  void RunSendRecv();
  void RunBarrier();

 private:
  int failedCases_ = 0;
};

void CollectivesMatrix::RunAllReduce() {
  for (bcclDataType_t dt : kAllTypes) {
    for (bcclRedOp_t op : kAllOps) {
      for (size_t count : Counts()) {
        const auto want = ExpectedReduction(dt, op, n(), count);
        for (bool inPlace : {false, true}) {
          auto fn = [&](RankEnv& e) {
            GuardedBuffer send(dt, count), recv(dt, count);
            FillReduceInput(dt, op, e.nranks, e.rank, 0, count, send.data());
            const std::vector<unsigned char> input(send.at(0), send.at(count));
            void* out = inPlace ? send.data() : recv.data();
            const bcclResult_t res =
                bcclAllReduce(send.data(), out, count, dt, op, e.comm, StreamFor(e, count));
            if (!e.Ok(Sync(e, count, res), "bcclAllReduce")) return;
            Expect(e, "result", CompareElements(dt, out, want.data(), count));
            if (!inPlace)
              Expect(e, "sendbuff changed", CompareElements(dt, send.data(), input.data(), count));
            ExpectGuards(e, "sendbuff", send);
            ExpectGuards(e, "recvbuff", recv);
          };
          if (!Case(Label(Coll::AllReduce, dt, OpName(op), count, inPlace), fn)) return;
        }
      }
    }
  }
}

void CollectivesMatrix::RunAllGather() {
  for (bcclDataType_t dt : kAllTypes) {
    for (size_t count : Counts()) {
      std::vector<std::vector<unsigned char>> blocks;
      for (int s = 0; s < n(); ++s) blocks.push_back(PatternBytes(dt, s, count));
      for (bool inPlace : {false, true}) {
        auto fn = [&](RankEnv& e) {
          GuardedBuffer send(dt, count), recv(dt, count * e.nranks);
          const size_t mine = static_cast<size_t>(e.rank) * count;
          void* in = inPlace ? recv.at(mine) : send.data();
          FillPattern(dt, e.rank, count, in);
          const bcclResult_t res =
              bcclAllGather(in, recv.data(), count, dt, e.comm, StreamFor(e, count));
          if (!e.Ok(Sync(e, count, res), "bcclAllGather")) return;
          for (int s = 0; s < e.nranks; ++s) {
            const size_t at = static_cast<size_t>(s) * count;
            Expect(
                e, "block from rank " + std::to_string(s),
                CompareElements(dt, recv.at(at), blocks[static_cast<size_t>(s)].data(), count, at));
          }
          if (!inPlace)
            Expect(e, "sendbuff changed",
                   CompareElements(dt, send.data(), blocks[e.rank].data(), count));
          ExpectGuards(e, "sendbuff", send);
          ExpectGuards(e, "recvbuff", recv);
        };
        if (!Case(Label(Coll::AllGather, dt, nullptr, count, inPlace), fn)) return;
      }
    }
  }
}

void CollectivesMatrix::RunReduceScatter() {
  for (bcclDataType_t dt : kAllTypes) {
    for (bcclRedOp_t op : kAllOps) {
      for (size_t count : Counts()) {
        const size_t total = count * static_cast<size_t>(n());
        const auto want = ExpectedReduction(dt, op, n(), total);
        for (bool inPlace : {false, true}) {
          auto fn = [&](RankEnv& e) {
            GuardedBuffer send(dt, total), recv(dt, count);
            FillReduceInput(dt, op, e.nranks, e.rank, 0, total, send.data());
            const std::vector<unsigned char> input(send.at(0), send.at(total));
            const size_t mine = static_cast<size_t>(e.rank) * count;
            void* out = inPlace ? send.at(mine) : recv.data();
            const bcclResult_t res =
                bcclReduceScatter(send.data(), out, count, dt, op, e.comm, StreamFor(e, count));
            if (!e.Ok(Sync(e, count, res), "bcclReduceScatter")) return;
            Expect(e, "result",
                   CompareElements(dt, out, want.data() + mine * TypeSize(dt), count, mine));
            if (!inPlace)
              Expect(e, "sendbuff changed", CompareElements(dt, send.data(), input.data(), total));
            ExpectGuards(e, "sendbuff", send);
            ExpectGuards(e, "recvbuff", recv);
          };
          if (!Case(Label(Coll::ReduceScatter, dt, OpName(op), count, inPlace), fn)) return;
        }
      }
    }
  }
}

void CollectivesMatrix::RunBroadcast() {
  for (bcclDataType_t dt : kAllTypes) {
    for (size_t count : Counts()) {
      for (int root : Roots(n())) {
        const auto want = PatternBytes(dt, root, count);
        for (bool inPlace : {false, true}) {
          auto fn = [&](RankEnv& e) {
            GuardedBuffer send(dt, count), recv(dt, count);
            void* in = inPlace ? recv.data() : send.data();
            // A non-root's sendbuff holds other data that must not leak into the result.
            if (e.rank == root)
              FillPattern(dt, root, count, in);
            else if (!inPlace)
              FillPattern(dt, 1000 + e.rank, count, in);
            const bcclResult_t res =
                bcclBroadcast(in, recv.data(), count, dt, root, e.comm, StreamFor(e, count));
            if (!e.Ok(Sync(e, count, res), "bcclBroadcast")) return;
            Expect(e, "result", CompareElements(dt, recv.data(), want.data(), count));
            if (!inPlace && e.rank == root) {
              Expect(e, "sendbuff changed", CompareElements(dt, send.data(), want.data(), count));
            }
            ExpectGuards(e, "sendbuff", send);
            ExpectGuards(e, "recvbuff", recv);
          };
          if (!Case(Label(Coll::Broadcast, dt, nullptr, count, inPlace, root), fn)) return;
        }
      }
    }
  }
}

void CollectivesMatrix::RunReduce() {
  for (bcclDataType_t dt : kAllTypes) {
    for (bcclRedOp_t op : kAllOps) {
      for (size_t count : Counts()) {
        const auto want = ExpectedReduction(dt, op, n(), count);
        for (int root : Roots(n())) {
          for (bool inPlace : {false, true}) {
            auto fn = [&](RankEnv& e) {
              GuardedBuffer send(dt, count), recv(dt, count);
              FillReduceInput(dt, op, e.nranks, e.rank, 0, count, send.data());
              const std::vector<unsigned char> input(send.at(0), send.at(count));
              void* out = inPlace ? send.data() : recv.data();
              const bcclResult_t res =
                  bcclReduce(send.data(), out, count, dt, op, root, e.comm, StreamFor(e, count));
              if (!e.Ok(Sync(e, count, res), "bcclReduce")) return;
              // Only the root's recvbuff is defined; everyone's out-of-place input is const.
              if (e.rank == root) Expect(e, "result", CompareElements(dt, out, want.data(), count));
              if (!inPlace)
                Expect(e, "sendbuff changed",
                       CompareElements(dt, send.data(), input.data(), count));
              ExpectGuards(e, "sendbuff", send);
              ExpectGuards(e, "recvbuff", recv);
            };
            if (!Case(Label(Coll::Reduce, dt, OpName(op), count, inPlace, root), fn)) return;
          }
        }
      }
    }
  }
}

void CollectivesMatrix::RunAllToAll() {
  for (bcclDataType_t dt : kAllTypes) {
    for (size_t count : Counts()) {
      auto fn = [&](RankEnv& e) {
        const size_t nr = static_cast<size_t>(e.nranks);
        const size_t es = TypeSize(dt);
        GuardedBuffer send(dt, count * nr), recv(dt, count * nr);
        // Block d of rank r's send buffer is tagged (r -> d) so misrouted blocks are visible.
        for (int d = 0; d < e.nranks; ++d) {
          FillPattern(dt, e.rank * e.nranks + d, count, send.at(d * count));
        }
        const std::vector<unsigned char> input(send.at(0), send.at(count * nr));
        const bcclResult_t res =
            bcclAllToAll(send.data(), recv.data(), count, dt, e.comm, StreamFor(e, count));
        if (!e.Ok(Sync(e, count, res), "bcclAllToAll")) return;
        std::vector<unsigned char> want(count * es);
        for (int s = 0; s < e.nranks; ++s) {
          FillPattern(dt, s * e.nranks + e.rank, count, want.data());
          Expect(e, "block from rank " + std::to_string(s),
                 CompareElements(dt, recv.at(s * count), want.data(), count, s * count));
        }
        Expect(e, "sendbuff changed", CompareElements(dt, send.data(), input.data(), count * nr));
        ExpectGuards(e, "sendbuff", send);
        ExpectGuards(e, "recvbuff", recv);
      };
      if (!Case(Label(Coll::AllToAll, dt, nullptr, count, false), fn)) return;
    }
  }
}

void CollectivesMatrix::RunSendRecv() {
  for (bcclDataType_t dt : kAllTypes) {
    for (size_t count : Counts()) {
      // Each rank sends forward and backward around the ring in one group; with 1 rank both
      // peers are the rank itself, with 2 ranks both directions share one peer.
      auto fn = [&](RankEnv& e) {
        const int next = (e.rank + 1) % e.nranks;
        const int prev = (e.rank + e.nranks - 1) % e.nranks;
        GuardedBuffer fwd(dt, count), bwd(dt, count), fromPrev(dt, count), fromNext(dt, count);
        FillPattern(dt, e.rank, count, fwd.data());
        FillPattern(dt, 100 + e.rank, count, bwd.data());
        if (!e.Ok(bcclGroupStart(), "bcclGroupStart")) return;
        bcclStream_t s = StreamFor(e, count);
        e.Ok(bcclSend(fwd.data(), count, dt, next, e.comm, s), "bcclSend(next)");
        e.Ok(bcclRecv(fromPrev.data(), count, dt, prev, e.comm, s), "bcclRecv(prev)");
        e.Ok(bcclSend(bwd.data(), count, dt, prev, e.comm, s), "bcclSend(prev)");
        e.Ok(bcclRecv(fromNext.data(), count, dt, next, e.comm, s), "bcclRecv(next)");
        if (!e.Ok(Sync(e, count, bcclGroupEnd()), "bcclGroupEnd") || e.failed()) return;
        Expect(e, "from prev",
               CompareElements(dt, fromPrev.data(), PatternBytes(dt, prev, count).data(), count));
        Expect(e, "from next",
               CompareElements(dt, fromNext.data(), PatternBytes(dt, 100 + next, count).data(),
                               count));
        for (const GuardedBuffer* b : {&fwd, &bwd, &fromPrev, &fromNext}) {
          ExpectGuards(e, "send/recv buffer", *b);
        }
      };
      if (!Case(Label(Coll::SendRecv, dt, nullptr, count, false), fn)) return;
    }
  }
}

void CollectivesMatrix::RunBarrier() {
  // Many rounds: a barrier that lets a rank through early usually does so only sometimes.
  constexpr int kRounds = 60;
  std::vector<std::atomic<int>> arrived(kRounds);
  for (auto& a : arrived) a = 0;
  Case("Barrier x" + std::to_string(kRounds), [&](RankEnv& e) {
    bcclStream_t stream = nullptr;
    if (!e.Ok(bcclStreamCreate(&stream), "bcclStreamCreate")) return;
    for (int round = 0; round < kRounds; ++round) {
      arrived[round].fetch_add(1);
      // Every fifth round goes through a stream: a stream-ordered barrier must wait as well.
      const bool onStream = round % 5 == 4;
      if (!e.Ok(bcclBarrier(e.comm, onStream ? stream : nullptr), "bcclBarrier")) break;
      if (onStream && !e.Ok(bcclStreamSynchronize(stream), "bcclStreamSynchronize")) break;
      const int seen = arrived[round].load();
      if (seen != e.nranks) {
        e.Fail("round " + std::to_string(round) + ": left the barrier when only " +
               std::to_string(seen) + " ranks had arrived");
      }
    }
    e.Ok(bcclStreamDestroy(stream), "bcclStreamDestroy");
  });
}

TEST_P(CollectivesMatrix, Run) {
#ifdef BCCL_TEST_VERBS
  if (GetParam().transport == "verbs") BCCL_SKIP_UNLESS_VERBS();
#endif
  switch (GetParam().coll) {
    case Coll::AllReduce:
      RunAllReduce();
      break;
    case Coll::AllGather:
      RunAllGather();
      break;
    case Coll::ReduceScatter:
      RunReduceScatter();
      break;
    case Coll::Broadcast:
      RunBroadcast();
      break;
    case Coll::Reduce:
      RunReduce();
      break;
    case Coll::AllToAll:
      RunAllToAll();
      break;
    case Coll::SendRecv:
      RunSendRecv();
      break;
    case Coll::Barrier:
      RunBarrier();
      break;
  }
}

INSTANTIATE_TEST_SUITE_P(All, CollectivesMatrix, ::testing::ValuesIn(AllParams()),
                         [](const ::testing::TestParamInfo<MatrixParam>& info) {
                           return info.param.transport + "_n" + std::to_string(info.param.nranks) +
                                  "_" + CollName(info.param.coll);
                         });

// Random inputs cannot be summed exactly, and the library's ring order differs from ours, so
// this compares against a double-precision sum with a bound proportional to sum(|x|).
class FloatTolerance : public ::testing::TestWithParam<std::string> {};

TEST_P(FloatTolerance, RandomValues) {
  constexpr int kRanks = 5;
  constexpr size_t kCount = 100003;
  std::vector<std::vector<float>> inputs(kRanks, std::vector<float>(kCount));
  for (int r = 0; r < kRanks; ++r) {
    std::mt19937 gen(1234u + static_cast<unsigned>(r));
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float& x : inputs[r]) x = dist(gen);
  }
  std::vector<double> sum(kCount, 0.0), absSum(kCount, 0.0);
  for (const auto& in : inputs) {
    for (size_t i = 0; i < kCount; ++i) {
      sum[i] += in[i];
      absSum[i] += std::fabs(in[i]);
    }
  }
  auto check = [&](RankEnv& e, const char* what, const float* got, size_t first, size_t count,
                   double scale) {
    const double eps = 1.1920929e-07;
    size_t bad = 0;
    std::string first5;
    for (size_t k = 0; k < count; ++k) {
      const size_t i = first + k;
      const double want = sum[i] * scale;
      const double tol = (2.0 * kRanks * eps * absSum[i] + eps * std::fabs(sum[i])) * scale;
      if (!(std::fabs(got[k] - want) <= tol)) {
        if (++bad <= 5)
          first5 += " [" + std::to_string(i) + "] got " + std::to_string(got[k]) + " want " +
                    std::to_string(want);
      }
    }
    if (bad) e.Fail(std::string(what) + ": " + std::to_string(bad) + " elements off:" + first5);
  };

  ThreadRanks ranks(RanksOn(GetParam(), kRanks));
  ASSERT_EQ(ranks.initError(), "");
  EXPECT_TRUE(ranks.Run("float32 random AllReduce sum/avg, Reduce, ReduceScatter", [&](RankEnv& e) {
    const float* in = inputs[e.rank].data();
    std::vector<float> out(kCount);
    if (e.Ok(bcclAllReduce(in, out.data(), kCount, bcclFloat32, bcclSum, e.comm, nullptr),
             "bcclAllReduce sum")) {
      check(e, "AllReduce sum", out.data(), 0, kCount, 1.0);
    }
    if (e.Ok(bcclAllReduce(in, out.data(), kCount, bcclFloat32, bcclAvg, e.comm, nullptr),
             "bcclAllReduce avg")) {
      check(e, "AllReduce avg", out.data(), 0, kCount, 1.0 / kRanks);
    }
    const int root = kRanks - 1;
    if (e.Ok(bcclReduce(in, out.data(), kCount, bcclFloat32, bcclSum, root, e.comm, nullptr),
             "bcclReduce") &&
        e.rank == root) {
      check(e, "Reduce sum", out.data(), 0, kCount, 1.0);
    }
    const size_t rc = kCount / kRanks;
    if (e.Ok(bcclReduceScatter(in, out.data(), rc, bcclFloat32, bcclSum, e.comm, nullptr),
             "bcclReduceScatter")) {
      check(e, "ReduceScatter sum", out.data(), static_cast<size_t>(e.rank) * rc, rc, 1.0);
    }
  }));
  EXPECT_TRUE(ranks.Shutdown());
}

INSTANTIATE_TEST_SUITE_P(Transports, FloatTolerance, ::testing::Values("shm", "tcp"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace bccltest
