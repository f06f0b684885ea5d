// Conformance tests for the verbs transport: several VerbsContexts in one process (as ranks on
// threads have), connected pairwise over the RDMA device, driven from one thread. They check
// what the executor relies on: ordered matching, every size class, credits running out and
// coming back, several QPs per peer, reduction on receive, zero copy through the registration
// cache, size mismatches reported on both sides, a dead peer named with its QP and the work
// completion status, and a sleeping waiter woken by the completion channel.
//
// Without a usable RDMA device (this host, a CI runner without soft-RoCE) every test skips and
// says why; with BCCL_TEST_REQUIRE_VERBS=1 (set by tests/verbs/run_in_softroce_vm.sh) a missing
// device is a failure, so the VM run cannot pass vacuously.
#include <gtest/gtest.h>

#if !defined(BCCL_HAVE_VERBS)
TEST(VerbsTransport, NotBuilt) { GTEST_SKIP() << "bccl was built without verbs (libibverbs-dev)"; }
#else

#include <infiniband/verbs.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <thread>

#include "transport/verbs/verbs_connection.h"
#include "transport/verbs/verbs_context.h"
#include "transport/wait_set.h"

namespace bccl {
namespace {

using Clock = std::chrono::steady_clock;
// A failed call shows its message.
#define ASSERT_OK(expr)                       \
  do {                                        \
    const ::bccl::Status st_ = (expr);        \
    ASSERT_TRUE(st_.isOk()) << st_.message(); \
  } while (0)

// Sets environment variables for one test and restores them after.
class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*> > vars) {
    for (const auto& [name, value] : vars) {
      const char* old = getenv(name);
      saved_.push_back({name, old != nullptr, old != nullptr ? old : ""});
      setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    for (const Saved& s : saved_) {
      if (s.had) {
        setenv(s.name.c_str(), s.value.c_str(), 1);
      } else {
        unsetenv(s.name.c_str());
      }
    }
  }

 private:
  struct Saved {
    std::string name;
    bool had;
    std::string value;
  };
  std::vector<Saved> saved_;
};

struct Rank {
  std::unique_ptr<VerbsContext> ctx;
  std::vector<std::unique_ptr<VerbsConnection> > conns;  // by peer; null for itself
};

std::string nameOf(int rank) { return "rank " + std::to_string(rank); }

void fill(std::vector<char>* buf, int seed) {
  for (size_t i = 0; i < buf->size(); ++i) (*buf)[i] = static_cast<char>(seed * 131 + i * 31);
}

Status makeRanks(int n, std::vector<Rank>* ranks) {
  ranks->resize(n);
  for (Rank& r : *ranks) {
    auto c = VerbsContext::create();
    if (!c.isOk()) return c.status();
    r.ctx = std::move(c.value());
    r.conns.resize(n);
  }
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) {
      if (a == b) continue;
      auto c = VerbsConnection::create((*ranks)[a].ctx.get(), b, nameOf(b));
      if (!c.isOk()) return c.status();
      (*ranks)[a].conns[b] = std::move(c.value());
    }
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b)
      if (a != b)
        BCCL_RETURN_IF_ERROR((*ranks)[a].conns[b]->connect((*ranks)[b].conns[a]->localBlob()));
  return Status::ok();
}

void destroyAll(std::vector<Rank>* ranks) {
  for (Rank& r : *ranks) r.conns.clear();
  ranks->clear();
}

// Drives every connection until `expected` operations completed or one fails.
Status runUntil(const std::vector<Rank>& ranks, size_t expected, int timeoutMs,
                std::vector<uint64_t>* done) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  while (done->size() < expected) {
    for (const Rank& r : ranks)
      for (const auto& c : r.conns)
        if (c != nullptr && c->hasPending()) BCCL_RETURN_IF_ERROR(c->progress(done));
    if (Clock::now() > deadline)
      return timeoutError("only " + std::to_string(done->size()) + " of " +
                          std::to_string(expected) + " operations completed");
  }
  return Status::ok();
}

// After every operation completed: sends reported done when staged may still have writes in
// flight, and cancels or credits may be on their way. Progresses until no connection has
// anything left (true), or gives up after 5 s; any token reported meanwhile is an error.
::testing::AssertionResult settles(const std::vector<Rank>& ranks) {
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  std::vector<uint64_t> late;
  for (;;) {
    bool busy = false;
    for (const Rank& r : ranks)
      for (const auto& c : r.conns) {
        if (c == nullptr) continue;
        Status st = c->progress(&late);
        if (!st.isOk()) return ::testing::AssertionFailure() << st.message();
        busy = busy || c->hasPending();
      }
    if (!late.empty()) return ::testing::AssertionFailure() << late.size() << " late completions";
    if (!busy) return ::testing::AssertionSuccess();
    if (Clock::now() > deadline) return ::testing::AssertionFailure() << "still busy after 5 s";
  }
}

class VerbsTransport : public ::testing::Test {
 protected:
  void TearDown() override { destroyAll(&ranks_); }

  // Skips (saying why) only when there is no usable RDMA device and the run does not demand
  // one; any other failure to set up is a test failure.
  void create(int n) {
    Status st = makeRanks(n, &ranks_);
    if (st.isOk()) return;
    destroyAll(&ranks_);
    const char* require = getenv("BCCL_TEST_REQUIRE_VERBS");
    const bool noDevice = st.message().find("RDMA device") != std::string::npos;
    if (noDevice && (require == nullptr || strcmp(require, "1") != 0))
      GTEST_SKIP() << "no usable RDMA device here (" << st.message()
                   << "); tests/verbs/run_in_softroce_vm.sh runs these on soft-RoCE";
    FAIL() << st.message();
  }
  VerbsConnection* conn(int from, int to) { return ranks_[from].conns[to].get(); }

  std::vector<Rank> ranks_;
};

#define CREATE_RANKS(n)                           \
  do {                                            \
    create(n);                                    \
    if (IsSkipped() || HasFatalFailure()) return; \
  } while (0)

// Sizes around every boundary: empty, one byte, odd, exactly one slot, one slot and a byte,
// many slots (more than the ring holds, so credits must come back).
std::vector<size_t> sizesFor(size_t slot) {
  return {0, 1, 7, 4093, slot, slot + 1, 3 * slot - 5, 40 * slot + 3};
}

void exchangeBothWays(VerbsTransport* t, std::vector<Rank>& ranks, VerbsConnection* ab,
                      VerbsConnection* ba, const std::vector<size_t>& sizes) {
  (void)t;
  std::vector<std::vector<char> > out[2], in[2];
  for (int side = 0; side < 2; ++side)
    for (size_t i = 0; i < sizes.size(); ++i) {
      out[side].emplace_back(sizes[i]);
      fill(&out[side].back(), side * 10 + static_cast<int>(i));
      in[side].emplace_back(sizes[i], '\x5a');
    }
  VerbsConnection* c[2] = {ab, ba};
  // Side 0 receives before anything is sent; side 1 after its peer's sends are posted.
  for (size_t i = 0; i < sizes.size(); ++i) {
    RecvTarget r;
    r.dst = in[0][i].data();
    ASSERT_OK(c[0]->postRecv(r, sizes[i], 100 + i));
  }
  for (int side = 0; side < 2; ++side)
    for (size_t i = 0; i < sizes.size(); ++i)
      ASSERT_OK(c[side]->postSend(out[side][i].data(), sizes[i], i));
  for (size_t i = 0; i < sizes.size(); ++i) {
    RecvTarget r;
    r.dst = in[1][i].data();
    ASSERT_OK(c[1]->postRecv(r, sizes[i], 100 + i));
  }
  std::vector<uint64_t> done;
  Status st = runUntil(ranks, 4 * sizes.size(), 120000, &done);
  ASSERT_TRUE(st.isOk()) << st.message();
  for (int side = 0; side < 2; ++side)
    for (size_t i = 0; i < sizes.size(); ++i)
      EXPECT_TRUE(in[side][i] == out[1 - side][i]) << "side " << side << " size " << sizes[i];
  EXPECT_TRUE(settles(ranks));
}

TEST_F(VerbsTransport, OrderedMessagesEverySizeBothDirections) {
  CREATE_RANKS(2);
  EXPECT_NE(conn(0, 1)->describe().find(ranks_[0].ctx->port().device), std::string::npos);
  exchangeBothWays(this, ranks_, conn(0, 1), conn(1, 0),
                   sizesFor(ranks_[0].ctx->config().slotBytes));
}

// Two slots of 4 KiB and hundreds of messages: grants run out constantly and must come back.
TEST_F(VerbsTransport, CreditsExhaustedAndRefilled) {
  ScopedEnv env({{"BCCL_IB_SLOTS", "2"}, {"BCCL_IB_SLOT_BYTES", "4096"}});
  CREATE_RANKS(2);
  ASSERT_EQ(ranks_[0].ctx->config().slots, 2u);
  const size_t kCount = 300;
  const size_t sizes[] = {0, 1, 13, 4096, 4097, 70001};
  std::vector<std::vector<char> > out[2], in[2];
  for (int side = 0; side < 2; ++side)
    for (size_t i = 0; i < kCount; ++i) {
      out[side].emplace_back(sizes[i % 6]);
      fill(&out[side].back(), static_cast<int>(i) + side);
      in[side].emplace_back(sizes[i % 6]);
    }
  for (size_t i = 0; i < kCount; ++i)
    for (int side = 0; side < 2; ++side) {
      ASSERT_TRUE(conn(side, 1 - side)->postSend(out[side][i].data(), sizes[i % 6], i).isOk());
      RecvTarget t;
      t.dst = in[side][i].data();
      ASSERT_TRUE(conn(side, 1 - side)->postRecv(t, sizes[i % 6], kCount + i).isOk());
    }
  std::vector<uint64_t> done;
  Status st = runUntil(ranks_, 4 * kCount, 120000, &done);
  ASSERT_TRUE(st.isOk()) << st.message();
  for (int side = 0; side < 2; ++side)
    for (size_t i = 0; i < kCount; ++i) ASSERT_TRUE(in[side][i] == out[1 - side][i]) << i;
}

TEST_F(VerbsTransport, SeveralQpsPerPeerKeepOrder) {
  ScopedEnv env(
      {{"BCCL_IB_QPS_PER_PEER", "3"}, {"BCCL_IB_SLOTS", "4"}, {"BCCL_IB_SLOT_BYTES", "8192"}});
  CREATE_RANKS(2);
  EXPECT_NE(conn(0, 1)->describe().find("3 QP"), std::string::npos) << conn(0, 1)->describe();
  exchangeBothWays(this, ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
}

// Traffic both ways over 4 QPs (plain copies and a float sum, so a chunk landing twice or not
// at all shows), a QP forced into the error state while chunks are in flight: everything still
// arrives right, both ends drop to 3 QPs, and the connection goes on working. Each side's QP
// is broken in turn (the sender's end and the grantor's end fail differently), staged and
// zero-copy, and then QPs are broken down to the last, which fault injection will not take.
struct FailoverCase {
  int side;  // whose end of the QP is forced into error
  bool zeroCopy;
};

// `breakIt` breaks `lost` QPs (default: fault injection on side `breakSide`, one QP).
void trafficWithQpFailure(std::vector<Rank>& ranks, VerbsConnection* c01, VerbsConnection* c10,
                          int breakSide, int roundsBeforeBreak, bool countsDown = true,
                          const std::function<void()>& breakIt = nullptr, uint32_t lost = 1) {
  VerbsConnection* c[2] = {c01, c10};
  const size_t kBytes = 300 * 1024 + 3, kFloats = 50003;
  std::vector<char> out[2], in[2];
  std::vector<float> addend[2], acc[2];
  for (int side = 0; side < 2; ++side) {
    out[side].resize(kBytes);
    fill(&out[side], 7 + side);
    in[side].assign(kBytes, '\x5a');
    addend[side].resize(kFloats);
    acc[side].resize(kFloats);
    for (size_t i = 0; i < kFloats; ++i) {
      addend[side][i] = static_cast<float>((i + side) % 89);
      acc[side][i] = static_cast<float>(i % 97);
    }
  }
  for (int side = 0; side < 2; ++side) {
    RecvTarget copy;
    copy.dst = in[side].data();
    ASSERT_OK(c[side]->postRecv(copy, kBytes, 10));
    RecvTarget sum;
    sum.dst = reinterpret_cast<char*>(acc[side].data());
    sum.operand = reinterpret_cast<const char*>(acc[side].data());
    sum.dtype = bcclFloat32;
    sum.op = bcclSum;
    sum.elemSize = sizeof(float);
    ASSERT_OK(c[side]->postRecv(sum, kFloats * 4, 11));
    ASSERT_OK(c[side]->postSend(out[side].data(), kBytes, 12));
    ASSERT_OK(c[side]->postSend(addend[side].data(), kFloats * 4, 13));
  }
  std::vector<uint64_t> done;
  for (int round = 0; round < roundsBeforeBreak; ++round)
    for (VerbsConnection* x : c) ASSERT_TRUE(x->progress(&done).isOk());
  const uint32_t before = c[breakSide]->liveQps();
  if (breakIt) {
    breakIt();
  } else {
    ASSERT_TRUE(c[breakSide]->failOnePath());
  }
  Status st = runUntil(ranks, 8, 120000, &done);
  ASSERT_TRUE(st.isOk()) << st.message();
  for (int side = 0; side < 2; ++side) {
    EXPECT_TRUE(in[side] == out[1 - side]) << "side " << side;
    for (size_t i = 0; i < kFloats; ++i)
      ASSERT_EQ(acc[side][i], static_cast<float>(i % 97) + static_cast<float>((i + 1 - side) % 89))
          << "side " << side << " element " << i;
  }
  EXPECT_TRUE(settles(ranks));
  if (!countsDown) return;  // the QP may be back already
  // Both ends learn of it (the other one through the Down notice, which may still be on its
  // way when the traffic did not need the broken QP).
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while ((c[0]->liveQps() != before - lost || c[1]->liveQps() != before - lost) &&
         Clock::now() < deadline)
    for (VerbsConnection* x : c) ASSERT_TRUE(x->progress(&done).isOk());
  EXPECT_EQ(c[0]->liveQps(), before - lost);
  EXPECT_EQ(c[1]->liveQps(), before - lost);
  EXPECT_EQ(done.size(), 8u) << "no operation completes twice";
}

// Progresses both ends (no operation pending) until each has `live` QPs again or `seconds`
// pass; true when both got there and nothing completed meanwhile.
::testing::AssertionResult putBack(VerbsConnection* a, VerbsConnection* b, uint32_t live,
                                   int seconds) {
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  std::vector<uint64_t> none;
  while ((a->liveQps() < live || b->liveQps() < live) && Clock::now() < deadline) {
    for (VerbsConnection* c : {a, b}) {
      Status st = c->progress(&none);
      if (!st.isOk()) return ::testing::AssertionFailure() << st.message();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!none.empty()) return ::testing::AssertionFailure() << none.size() << " stray completions";
  if (a->liveQps() < live || b->liveQps() < live)
    return ::testing::AssertionFailure() << "live QPs " << a->liveQps() << " and " << b->liveQps()
                                         << " after " << seconds << " s, want " << live;
  return ::testing::AssertionSuccess();
}

class VerbsFailover : public VerbsTransport, public ::testing::WithParamInterface<FailoverCase> {};

TEST_P(VerbsFailover, QpForcedIntoErrorFailsOverToTheOthers) {
  // Counted down to the last QP: none is put back meanwhile.
  ScopedEnv env({{"BCCL_IB_QP_RETRY_MS", "0"},
                 {"BCCL_IB_QPS_PER_PEER", "4"},
                 {"BCCL_IB_SLOTS", "4"},
                 {"BCCL_IB_SLOT_BYTES", "8192"},
                 {"BCCL_IB_ZERO_COPY", GetParam().zeroCopy ? "1" : "0"},
                 {"BCCL_IB_ZERO_COPY_BYTES", "65536"}});
  CREATE_RANKS(2);
  // Zero copy is only defined for buffers that stay mapped between calls (BCCL_IB_ZERO_COPY's
  // contract): the phases below free and allocate buffers of a few hundred KiB, which malloc
  // would unmap and map again at the same addresses, under registrations the cache keeps. Keep
  // freed memory mapped instead, as an application using zero copy must.
  if (GetParam().zeroCopy) {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
  const int side = GetParam().side;
  // A few rounds in, so grants and writes are out on every QP when one breaks.
  trafficWithQpFailure(ranks_, conn(0, 1), conn(1, 0), side, 3);
  if (HasFatalFailure()) return;
  exchangeBothWays(this, ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
  if (HasFatalFailure()) return;
  // Down to the last QP, alternating sides and breaking before any progress.
  trafficWithQpFailure(ranks_, conn(0, 1), conn(1, 0), 1 - side, 0);
  if (HasFatalFailure()) return;
  trafficWithQpFailure(ranks_, conn(0, 1), conn(1, 0), side, 1);
  if (HasFatalFailure()) return;
  EXPECT_EQ(conn(0, 1)->liveQps(), 1u);
  EXPECT_FALSE(conn(0, 1)->failOnePath()) << "the last QP is not offered to fault injection";
  exchangeBothWays(this, ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
}

// A QP cut out is reset after BCCL_IB_QP_RETRY_MS once both ends have settled its failure, is
// live again at both ends, and is granted chunks again.
TEST_F(VerbsTransport, AFailedQpIsPutBackAndCarriesTrafficAgain) {
  ScopedEnv env({{"BCCL_IB_QP_RETRY_MS", "50"},
                 {"BCCL_IB_QPS_PER_PEER", "3"},
                 {"BCCL_IB_SLOTS", "4"},
                 {"BCCL_IB_SLOT_BYTES", "8192"}});
  CREATE_RANKS(2);
  for (int round = 0; round < 2; ++round) {  // the same QP fails and comes back twice
    trafficWithQpFailure(ranks_, conn(0, 1), conn(1, 0), round, 2, false);
    if (HasFatalFailure()) return;
    ASSERT_TRUE(putBack(conn(0, 1), conn(1, 0), 3, 20));
    // The QP fault injection broke (the highest) is granted chunks again, in both directions.
    const uint64_t before01 = conn(0, 1)->grantsIssuedOn(2),
                   before10 = conn(1, 0)->grantsIssuedOn(2);
    exchangeBothWays(this, ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
    if (HasFatalFailure()) return;
    EXPECT_GT(conn(0, 1)->grantsIssuedOn(2), before01 + 10);
    EXPECT_GT(conn(1, 0)->grantsIssuedOn(2), before10 + 10);
  }
}

// Two devices (the soft-RoCE VM has rxe1 on a veth pair of its own): QPs alternate between them
// and both carry chunks. The second device's link goes down mid-traffic: its QPs are cut out at
// both ends and the traffic finishes on the first; once the link is back they are put back and
// carry chunks again.
TEST_F(VerbsTransport, TwoDevicesAndTheSecondLosesItsLink) {
  const char* dev1 = getenv("SOFTROCE_DEV");
  const char* dev2 = getenv("SOFTROCE_DEV2");
  const char* netdev2 = getenv("SOFTROCE_NETDEV2");
  if (dev1 == nullptr || dev2 == nullptr || netdev2 == nullptr || geteuid() != 0)
    GTEST_SKIP() << "needs two RDMA devices and root: run in tests/verbs/softroce_vm.sh";
  const std::string hca = std::string(dev1) + "," + dev2;
  ScopedEnv env({{"BCCL_IB_HCA", hca.c_str()},
                 {"BCCL_IB_QPS_PER_PEER", "4"},
                 {"BCCL_IB_SLOTS", "4"},
                 {"BCCL_IB_SLOT_BYTES", "8192"},
                 {"BCCL_IB_QP_RETRY_MS", "100"}});
  CREATE_RANKS(2);
  ASSERT_EQ(ranks_[0].ctx->rails(), 2u);
  EXPECT_NE(conn(0, 1)->describe().find(dev2), std::string::npos) << conn(0, 1)->describe();
  exchangeBothWays(this, ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
  if (HasFatalFailure()) return;
  for (uint32_t qi = 0; qi < 4; ++qi)  // QPs 1 and 3 are on the second device
    EXPECT_GT(conn(0, 1)->grantsIssuedOn(qi), 0u) << "QP " << qi;
  const std::string down = std::string("ip link set ") + netdev2 + " down";
  const std::string up = std::string("ip link set ") + netdev2 + " up";
  trafficWithQpFailure(
      ranks_, conn(0, 1), conn(1, 0), 0, 2, true,
      [&] { ASSERT_EQ(system(down.c_str()), 0) << down; }, 2);
  const bool broke = HasFatalFailure();
  EXPECT_EQ(system(up.c_str()), 0) << up;
  if (broke) return;
  ASSERT_TRUE(putBack(conn(0, 1), conn(1, 0), 4, 30)) << "the second device's QPs";
  const uint64_t before = conn(0, 1)->grantsIssuedOn(1);
  exchangeBothWays(this, ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
  EXPECT_GT(conn(0, 1)->grantsIssuedOn(1), before) << "QP 1 (second device) carries nothing";
}

INSTANTIATE_TEST_SUITE_P(Cases, VerbsFailover,
                         ::testing::Values(FailoverCase{0, false}, FailoverCase{1, false},
                                           FailoverCase{0, true}, FailoverCase{1, true}),
                         [](const ::testing::TestParamInfo<FailoverCase>& info) {
                           return std::string(info.param.side == 0 ? "RankZeroEnd" : "RankOneEnd") +
                                  (info.param.zeroCopy ? "ZeroCopy" : "Staged");
                         });

TEST_F(VerbsTransport, RecvReduceFloatSumAcrossChunks) {
  ScopedEnv env({{"BCCL_IB_SLOTS", "3"}, {"BCCL_IB_SLOT_BYTES", "4096"}});
  CREATE_RANKS(2);
  // Small integers keep float sums exact; the largest spans many chunks through 3 slots.
  for (bool inPlace : {false, true}) {
    for (size_t n : {size_t{1}, size_t{7}, size_t{1025}, size_t{50003}}) {
      std::vector<float> incoming(n), operand(n), dst(n, -1.0f);
      for (size_t i = 0; i < n; ++i) {
        incoming[i] = static_cast<float>(i % 89);
        operand[i] = static_cast<float>(i % 97) * 2.0f;
      }
      RecvTarget t;
      t.dst = reinterpret_cast<char*>(inPlace ? operand.data() : dst.data());
      t.operand = reinterpret_cast<const char*>(operand.data());
      t.dtype = bcclFloat32;
      t.op = bcclSum;
      t.elemSize = sizeof(float);
      ASSERT_TRUE(conn(1, 0)->postRecv(t, n * 4, 1).isOk());
      ASSERT_TRUE(conn(0, 1)->postSend(incoming.data(), n * 4, 2).isOk());
      std::vector<uint64_t> done;
      Status st = runUntil(ranks_, 2, 60000, &done);
      ASSERT_TRUE(st.isOk()) << st.message();
      const float* got = inPlace ? operand.data() : dst.data();
      for (size_t i = 0; i < n; ++i)
        ASSERT_EQ(got[i], static_cast<float>(i % 97) * 2.0f + static_cast<float>(i % 89))
            << "n=" << n << " i=" << i << " inPlace=" << inPlace;
    }
  }
}

// Two eager slots and many small messages sent before any receive is posted: they wait as
// unexpected messages, the sender runs out of credits and falls back to (lazy) grants, credits
// come back, and a granted message in the middle keeps its place in the order.
TEST_F(VerbsTransport, EagerCreditsAndUnexpectedMessages) {
  ScopedEnv env({{"BCCL_IB_EAGER_SLOTS", "2"}, {"BCCL_IB_EAGER_BYTES", "4096"}});
  CREATE_RANKS(2);
  ASSERT_NE(conn(0, 1)->describe().find("eager up to 4096"), std::string::npos)
      << conn(0, 1)->describe();
  const size_t sizes[] = {0, 1, 8, 4096, 13, 200000, 7, 4095, 64};
  const size_t kCount = 60;
  std::vector<std::vector<char> > out, in;
  for (size_t i = 0; i < kCount; ++i) {
    out.emplace_back(sizes[i % 9]);
    fill(&out.back(), static_cast<int>(i));
    in.emplace_back(sizes[i % 9], '\x33');
    ASSERT_TRUE(conn(0, 1)->postSend(out.back().data(), out.back().size(), i).isOk());
  }
  // Let the eager ones land before anything is posted to receive them.
  std::vector<uint64_t> done;
  const auto until = Clock::now() + std::chrono::milliseconds(50);
  while (Clock::now() < until) {
    ASSERT_TRUE(conn(0, 1)->progress(&done).isOk());
    ASSERT_TRUE(conn(1, 0)->progress(&done).isOk());
  }
  for (size_t i = 0; i < kCount; ++i) {
    RecvTarget t;
    t.dst = in[i].data();
    ASSERT_TRUE(conn(1, 0)->postRecv(t, in[i].size(), kCount + i).isOk());
  }
  Status st = runUntil(ranks_, 2 * kCount, 120000, &done);
  ASSERT_TRUE(st.isOk()) << st.message();
  for (size_t i = 0; i < kCount; ++i) EXPECT_TRUE(in[i] == out[i]) << "message " << i;
  // Quiet again: no grant, cancel or credit left half-done.
  EXPECT_TRUE(settles(ranks_));
  exchangeBothWays(this, ranks_, conn(0, 1), conn(1, 0), {0, 3, 4096, 5000, 100000});
}

// Zero copy: large messages are written straight between registered user buffers, and a buffer
// used again finds its registration in the cache instead of registering it again.
// A free cached registration overlapping a new one is absorbed into it, but its memory may have
// been unmapped since: the cache then registers just what was asked for instead of failing.
TEST_F(VerbsTransport, RegistrationCacheSurvivesUnmappedNeighbours) {
  CREATE_RANKS(1);
  VerbsMrCache& cache = ranks_[0].ctx->mrCache();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  char* region = static_cast<char*>(
      mmap(nullptr, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(region, MAP_FAILED);
  StatusOr<ibv_mr*> first = cache.acquire(region, 2 * page, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_TRUE(first.isOk()) << first.status().message();
  cache.release(first.value());
  ASSERT_EQ(munmap(region, page), 0);  // the first page is gone, the others stay
  // Pages 1-2: overlaps the free registration of pages 0-1 without fitting in it.
  StatusOr<ibv_mr*> next = cache.acquire(region + page, 2 * page, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_TRUE(next.isOk()) << next.status().message();
  EXPECT_EQ(reinterpret_cast<char*>(next.value()->addr), region + page);
  cache.release(next.value());
  munmap(region + page, 2 * page);
}

TEST_F(VerbsTransport, ZeroCopyUsesTheRegistrationCache) {
  ScopedEnv env({{"BCCL_IB_ZERO_COPY", "1"},
                 {"BCCL_IB_ZERO_COPY_BYTES", "65536"},
                 {"BCCL_IB_QPS_PER_PEER", "2"}});
  CREATE_RANKS(2);
  ASSERT_NE(conn(0, 1)->describe().find("zero-copy"), std::string::npos);
  std::vector<char> out((3 << 20) + 5), in(out.size());
  for (int round = 0; round < 4; ++round) {
    fill(&out, round);
    RecvTarget t;
    t.dst = in.data();
    ASSERT_TRUE(conn(1, 0)->postRecv(t, in.size(), 1).isOk());
    ASSERT_TRUE(conn(0, 1)->postSend(out.data(), out.size(), 2).isOk());
    std::vector<uint64_t> done;
    Status st = runUntil(ranks_, 2, 120000, &done);
    ASSERT_TRUE(st.isOk()) << st.message();
    ASSERT_TRUE(in == out) << "round " << round;
  }
  // One registration per buffer, made in the first round; every later round hits.
  EXPECT_EQ(ranks_[0].ctx->mrCache().misses(), 1u);
  EXPECT_EQ(ranks_[1].ctx->mrCache().misses(), 1u);
  EXPECT_GE(ranks_[0].ctx->mrCache().hits(), 3u);
  EXPECT_GE(ranks_[1].ctx->mrCache().hits(), 3u);
  // Small messages still go through the rings alongside.
  exchangeBothWays(this, ranks_, conn(0, 1), conn(1, 0), {0, 5, 70000, (1 << 20) + 7});
}

// Eager-sized on both sides, eager to a large receive, large to a small receive (granted only
// lazily), and granted on both sides.
TEST_F(VerbsTransport, SizeMismatchIsReportedOnBothSides) {
  struct Case {
    size_t sent, expected;
  };
  const Case cases[] = {{100, 64},     {64, 100},     {0, 8},
                        {100, 100000}, {100000, 100}, {300000, 200000}};
  for (const Case& c : cases) {
    CREATE_RANKS(2);
    std::vector<char> out(c.sent, 'x'), in(c.expected + 16);
    RecvTarget t;
    t.dst = in.data();
    ASSERT_TRUE(conn(1, 0)->postRecv(t, c.expected, 1).isOk());
    ASSERT_TRUE(conn(0, 1)->postSend(out.data(), c.sent, 2).isOk());
    std::vector<uint64_t> done;
    Status sender, receiver;
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while ((sender.isOk() || receiver.isOk()) && Clock::now() < deadline) {
      if (sender.isOk()) sender = conn(0, 1)->progress(&done);
      if (receiver.isOk()) receiver = conn(1, 0)->progress(&done);
    }
    const std::string what =
        std::to_string(c.sent) + " sent, " + std::to_string(c.expected) + " expected: ";
    EXPECT_EQ(sender.code(), bcclInvalidUsage) << what << sender.message();
    EXPECT_NE(sender.message().find("rank 1"), std::string::npos) << what << sender.message();
    EXPECT_NE(sender.message().find(std::to_string(c.expected)), std::string::npos)
        << what << sender.message();
    EXPECT_EQ(receiver.code(), bcclInvalidUsage) << what << receiver.message();
    EXPECT_NE(receiver.message().find("rank 0"), std::string::npos) << what << receiver.message();
    EXPECT_NE(receiver.message().find(std::to_string(c.expected)), std::string::npos)
        << what << receiver.message();
    // An eager send completes when it is written (its buffer is free): only the receive must
    // not complete.
    EXPECT_EQ(std::count(done.begin(), done.end(), 1u), 0) << what;
    conn(1, 0)->dropPending();
    conn(0, 1)->dropPending();
    destroyAll(&ranks_);
  }
}

// Rank 0's QPs vanish (as when its process dies): rank 1's next write gets no acknowledgement,
// and the error names the peer, the QP and the work completion status.
TEST_F(VerbsTransport, DeadPeerIsNamedWithQpAndStatus) {
  // Short retry timers, so the transport gives up in milliseconds rather than half a second.
  ScopedEnv env({{"BCCL_IB_TIMEOUT", "8"}, {"BCCL_IB_RETRY_CNT", "1"}});
  CREATE_RANKS(2);
  // Grants travel on the control QP: the failing write is there.
  const uint32_t qpn = conn(1, 0)->localBlob().ctrl.qpn;
  ranks_[0].conns.clear();
  std::vector<char> in(100);
  RecvTarget t;
  t.dst = in.data();
  // Posting the receive sends a grant to rank 0: that write is what fails.
  ASSERT_TRUE(conn(1, 0)->postRecv(t, in.size(), 7).isOk());
  std::vector<uint64_t> done;
  Status st;
  const auto start = Clock::now();
  while (st.isOk() && Clock::now() - start < std::chrono::seconds(30))
    st = conn(1, 0)->progress(&done);
  ASSERT_FALSE(st.isOk()) << "still waiting on a dead peer after 30 s";
  EXPECT_EQ(st.code(), bcclRemoteError) << st.message();
  EXPECT_EQ(st.failedPeer(), 0) << st.message();
  EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("QP " + std::to_string(qpn)), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(ibv_wc_status_str(IBV_WC_RETRY_EXC_ERR)), std::string::npos)
      << st.message();
  EXPECT_TRUE(done.empty());
  conn(1, 0)->dropPending();
  EXPECT_FALSE(conn(1, 0)->postSend(in.data(), 1, 2).isOk());
}

// Misconfiguration is named: a device that is not there (and which ones are), a port it does
// not have, a GID index without a GID.
TEST_F(VerbsTransport, DeviceErrorsNameTheDevice) {
  CREATE_RANKS(1);  // proves a usable device exists (else this skips)
  const std::string dev = ranks_[0].ctx->port().device;
  destroyAll(&ranks_);
  struct Case {
    const char* hca;
    const char* gid;
    std::vector<std::string> want;
  };
  const Case cases[] = {
      {"nosuchdev0", "-1", {"nosuchdev0", "no such device", dev}},
      {"", "-1", {}},  // placeholder for dev:9 below
      {"", "4000", {dev, "no GID at index 4000"}},
  };
  for (size_t i = 0; i < 3; ++i) {
    const std::string hca = i == 1 ? dev + ":9" : cases[i].hca;
    ScopedEnv env({{"BCCL_IB_HCA", hca.c_str()}, {"BCCL_IB_GID_INDEX", cases[i].gid}});
    StatusOr<std::unique_ptr<VerbsContext> > c = VerbsContext::create();
    ASSERT_FALSE(c.isOk()) << "BCCL_IB_HCA=" << hca << " BCCL_IB_GID_INDEX=" << cases[i].gid;
    std::vector<std::string> want = cases[i].want;
    if (i == 1) want = {dev, "no port 9"};
    for (const std::string& w : want)
      EXPECT_NE(c.status().message().find(w), std::string::npos)
          << "want '" << w << "' in: " << c.status().message();
  }
}

// The link under rxe0 goes down: the port error (an asynchronous event) fails the connection's
// next progress with an error naming the peer and the port. Needs root to take the link down,
// so only the VM run asks for it (BCCL_TEST_PORT_DOWN=netdev).
TEST_F(VerbsTransport, PortDownFailsTheConnectionNamingThePeer) {
  const char* netdev = getenv("BCCL_TEST_PORT_DOWN");
  if (netdev == nullptr || geteuid() != 0)
    GTEST_SKIP() << "set BCCL_TEST_PORT_DOWN=<netdev under the RDMA port> and run as root";
  CREATE_RANKS(2);
  std::vector<char> in(100);
  RecvTarget t;
  t.dst = in.data();
  ASSERT_TRUE(conn(1, 0)->postRecv(t, in.size(), 1).isOk());
  const std::string down = std::string("ip link set ") + netdev + " down";
  const std::string up = std::string("ip link set ") + netdev + " up";
  ASSERT_EQ(system(down.c_str()), 0) << down;
  std::vector<uint64_t> done;
  Status st;
  const auto start = Clock::now();
  while (st.isOk() && Clock::now() - start < std::chrono::seconds(20))
    st = conn(1, 0)->progress(&done);
  EXPECT_EQ(system(up.c_str()), 0) << up;
  ASSERT_FALSE(st.isOk()) << "no error 20 s after the link went down";
  EXPECT_NE(st.message().find("rank 0"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("port"), std::string::npos) << st.message();
  conn(1, 0)->dropPending();
  destroyAll(&ranks_);
  // Wait for the port to come back, so later tests find it active (that very device: another
  // one may be up all along).
  const char* dev = getenv("SOFTROCE_DEV");
  ScopedEnv only({{"BCCL_IB_HCA", dev != nullptr ? dev : ""}});
  const auto back = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < back) {
    StatusOr<std::unique_ptr<VerbsContext> > c = VerbsContext::create();
    if (c.isOk()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "the port did not come back after '" << up << "'";
}

TEST_F(VerbsTransport, SeverFailsPendingOperationsBlamingThePeer) {
  CREATE_RANKS(2);
  std::vector<char> in(4096);
  RecvTarget t;
  t.dst = in.data();
  ASSERT_TRUE(conn(0, 1)->postRecv(t, in.size(), 1).isOk());
  conn(0, 1)->sever();
  std::vector<uint64_t> done;
  Status st = conn(0, 1)->progress(&done);
  EXPECT_EQ(st.code(), bcclRemoteError) << st.message();
  EXPECT_EQ(st.failedPeer(), 1);
  EXPECT_NE(st.message().find("rank 1"), std::string::npos) << st.message();
  conn(0, 1)->dropPending();
  EXPECT_FALSE(conn(0, 1)->postSend(in.data(), 1, 2).isOk());
}

TEST_F(VerbsTransport, FourRanksAllPairs) {
  CREATE_RANKS(4);
  const size_t sizes[] = {3, 64 * 1024 + 3, (1 << 20) + 1};
  std::vector<std::vector<char> > out, in;
  for (size_t s : sizes)
    for (int a = 0; a < 4; ++a)
      for (int b = 0; b < 4; ++b) {
        if (a == b) continue;
        out.emplace_back(s);
        fill(&out.back(), static_cast<int>(out.size()));
        in.emplace_back(s);
        RecvTarget t;
        t.dst = in.back().data();
        ASSERT_TRUE(conn(b, a)->postRecv(t, s, 2 * out.size()).isOk());
        ASSERT_TRUE(conn(a, b)->postSend(out.back().data(), s, 2 * out.size() + 1).isOk());
      }
  std::vector<uint64_t> done;
  Status st = runUntil(ranks_, 2 * out.size(), 120000, &done);
  ASSERT_TRUE(st.isOk()) << st.message();
  for (size_t i = 0; i < out.size(); ++i) EXPECT_TRUE(in[i] == out[i]) << i;
}

double threadCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Waits for `token` the way the executor does when idle: arm, re-check, sleep.
Status waitPolitely(Connection* c, uint64_t token, int timeoutMs, int* sleeps) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeoutMs);
  std::vector<uint64_t> done;
  WaitSet waits;
  auto finished = [&]() { return std::find(done.begin(), done.end(), token) != done.end(); };
  for (;;) {
    BCCL_RETURN_IF_ERROR(c->progress(&done));
    if (finished()) return Status::ok();
    if (Clock::now() > deadline) return timeoutError("waitPolitely: no completion");
    waits.clear();
    c->addToWaitSet(&waits);
    waits.arm();
    Status st = c->progress(&done);
    if (st.isOk() && !finished()) {
      ++*sleeps;
      waits.wait(3000000);  // far longer than the test waits: only a wake-up ends it early
    }
    waits.disarm();
    BCCL_RETURN_IF_ERROR(st);
  }
}

// The receiver sleeps on the completion channel; the sender sends after a delay. A waiter the
// message did not wake would sleep 3 s; little CPU while waiting proves it really slept.
class VerbsWake : public VerbsTransport, public ::testing::WithParamInterface<size_t> {};

// Eager (8 B) and granted (100000 B) messages.
TEST_P(VerbsWake, ArrivingMessageWakesSleepingWaiter) {
  CREATE_RANKS(2);
  const int kDelayMs = 300;
  std::vector<char> ping(GetParam(), 'p'), pong(ping.size());
  Status sendSt, recvSt;
  int sendSleeps = 0, recvSleeps = 0;
  double waitedMs = 0, cpuMs = 0;
  std::thread sender([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(kDelayMs));
    sendSt = conn(0, 1)->postSend(ping.data(), ping.size(), 1);
    if (sendSt.isOk()) sendSt = waitPolitely(conn(0, 1), 1, 60000, &sendSleeps);
  });
  RecvTarget t;
  t.dst = pong.data();
  recvSt = conn(1, 0)->postRecv(t, pong.size(), 2);
  const auto start = Clock::now();
  const double cpu0 = threadCpuMs();
  if (recvSt.isOk()) recvSt = waitPolitely(conn(1, 0), 2, 60000, &recvSleeps);
  waitedMs = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  cpuMs = threadCpuMs() - cpu0;
  sender.join();
  ASSERT_TRUE(sendSt.isOk()) << sendSt.message();
  ASSERT_TRUE(recvSt.isOk()) << recvSt.message();
  EXPECT_TRUE(pong == ping);
  EXPECT_GE(recvSleeps, 1);
  EXPECT_LT(waitedMs, 2500.0) << "the completion did not wake the sleeping receiver";
  EXPECT_LT(cpuMs, waitedMs * 0.5) << "the receiver spun instead of sleeping";
}

INSTANTIATE_TEST_SUITE_P(Sizes, VerbsWake, ::testing::Values(size_t{8}, size_t{100000}));

}  // namespace
}  // namespace bccl

#endif  // BCCL_HAVE_VERBS
