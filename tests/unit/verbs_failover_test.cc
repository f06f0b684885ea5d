// The verbs transport losing queue pairs and devices: traffic goes on over the QPs that are
// left, a failed QP is reset and put back, and a second device that loses its link is cut out.
#include <gtest/gtest.h>

#if !defined(BCCL_HAVE_VERBS)
TEST(VerbsFailover, NotBuilt) { GTEST_SKIP() << "bccl was built without verbs (libibverbs-dev)"; }
#else

#include <malloc.h>

#include <functional>
#include <thread>

#include "unit/verbs_fixture.h"

namespace bccl {
namespace {

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
  exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
  if (HasFatalFailure()) return;
  // Down to the last QP, alternating sides and breaking before any progress.
  trafficWithQpFailure(ranks_, conn(0, 1), conn(1, 0), 1 - side, 0);
  if (HasFatalFailure()) return;
  trafficWithQpFailure(ranks_, conn(0, 1), conn(1, 0), side, 1);
  if (HasFatalFailure()) return;
  EXPECT_EQ(conn(0, 1)->liveQps(), 1u);
  EXPECT_FALSE(conn(0, 1)->failOnePath()) << "the last QP is not offered to fault injection";
  exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
}

// Three QPs per peer, small rings, and a failed QP put back 50 ms after its failure settles.
class VerbsQpPutBack : public VerbsTransport {
  ScopedEnv env_{{"BCCL_IB_QP_RETRY_MS", "50"},
                 {"BCCL_IB_QPS_PER_PEER", "3"},
                 {"BCCL_IB_SLOTS", "4"},
                 {"BCCL_IB_SLOT_BYTES", "8192"}};
};

// A QP cut out is reset after BCCL_IB_QP_RETRY_MS once both ends have settled its failure, is
// live again at both ends, and is granted chunks again.
TEST_F(VerbsQpPutBack, AFailedQpIsPutBackAndCarriesTrafficAgain) {
  CREATE_RANKS(2);
  for (int round = 0; round < 2; ++round) {  // the same QP fails and comes back twice
    trafficWithQpFailure(ranks_, conn(0, 1), conn(1, 0), round, 2, false);
    if (HasFatalFailure()) return;
    ASSERT_TRUE(putBack(conn(0, 1), conn(1, 0), 3, 20));
    // The QP fault injection broke (the highest) is granted chunks again, in both directions.
    const uint64_t before01 = conn(0, 1)->grantsIssuedOn(2),
                   before10 = conn(1, 0)->grantsIssuedOn(2);
    exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
    if (HasFatalFailure()) return;
    EXPECT_GT(conn(0, 1)->grantsIssuedOn(2), before01 + 10);
    EXPECT_GT(conn(1, 0)->grantsIssuedOn(2), before10 + 10);
  }
}

// Progresses the two ends one call at a time until one of them has `live` QPs again, and
// returns that one (null after `seconds`, or on an error).
VerbsConnection* firstPutBack(VerbsConnection* a, VerbsConnection* b, uint32_t live, int seconds) {
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  std::vector<uint64_t> none;
  while (Clock::now() < deadline)
    for (VerbsConnection* c : {a, b}) {
      if (!c->progress(&none).isOk() || !none.empty()) return nullptr;
      if (c->liveQps() >= live) return c;
    }
  return nullptr;
}

// The QP fails again at the end that put it back first, before the other end has: its Down
// notice then finds the other end's QP still out (reset, the peer's Up on its way or just
// taken). That end must put the QP back and cut it out again, not ignore the notice: else it
// would grant chunks on a QP the peer no longer serves, and the traffic would stall.
TEST_F(VerbsQpPutBack, AQpFailingAgainRightAfterItIsPutBackIsCutOutAtBothEnds) {
  CREATE_RANKS(2);
  trafficWithQpFailure(ranks_, conn(0, 1), conn(1, 0), 0, 2, false);
  if (HasFatalFailure()) return;
  VerbsConnection* first = firstPutBack(conn(0, 1), conn(1, 0), 3, 20);
  ASSERT_NE(first, nullptr) << "neither end put the QP back";
  VerbsConnection* other = first == conn(0, 1) ? conn(1, 0) : conn(0, 1);
  // The other end has not taken this end's Up yet (else it would have put its own back). Cut
  // the QP out here and let the Down land too, so the other end takes both at once.
  ASSERT_TRUE(first->failOnePath());
  std::vector<uint64_t> none;
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (first->liveQps() == 3 && Clock::now() < deadline) ASSERT_OK(first->progress(&none));
  ASSERT_EQ(first->liveQps(), 2u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  // Traffic over what is left: it must finish, and the QP must come back at both ends.
  trafficWithQpFailure(ranks_, conn(0, 1), conn(1, 0), 0, 0, false, [] {});
  if (HasFatalFailure()) return;
  EXPECT_LE(other->liveQps(), 3u);
  ASSERT_TRUE(putBack(conn(0, 1), conn(1, 0), 3, 20));
  exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
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
  exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
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
  exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
  EXPECT_GT(conn(0, 1)->grantsIssuedOn(1), before) << "QP 1 (second device) carries nothing";
}

INSTANTIATE_TEST_SUITE_P(Cases, VerbsFailover,
                         ::testing::Values(FailoverCase{0, false}, FailoverCase{1, false},
                                           FailoverCase{0, true}, FailoverCase{1, true}),
                         [](const ::testing::TestParamInfo<FailoverCase>& info) {
                           return std::string(info.param.side == 0 ? "RankZeroEnd" : "RankOneEnd") +
                                  (info.param.zeroCopy ? "ZeroCopy" : "Staged");
                         });

}  // namespace
}  // namespace bccl

#endif  // BCCL_HAVE_VERBS
