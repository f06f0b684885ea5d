// Conformance tests for the verbs transport's data path: what the executor relies on. Ordered
// matching, every size class, credits running out and coming back, several QPs per peer,
// reduction on receive, eager messages, zero copy through the registration cache, four ranks
// in all pairs, and a sleeping waiter woken by the completion channel. Failover and errors are
// in verbs_failover_test.cc and verbs_errors_test.cc; the shared setup in verbs_fixture.h.
#include <gtest/gtest.h>

#if !defined(BCCL_HAVE_VERBS)
TEST(VerbsTransport, NotBuilt) { GTEST_SKIP() << "bccl was built without verbs (libibverbs-dev)"; }
#else

#include <malloc.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "unit/verbs_fixture.h"

namespace bccl {
namespace {

TEST_F(VerbsTransport, OrderedMessagesEverySizeBothDirections) {
  CREATE_RANKS(2);
  EXPECT_NE(conn(0, 1)->describe().find(ranks_[0].ctx->port().device), std::string::npos);
  exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), sizesFor(ranks_[0].ctx->config().slotBytes));
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
  exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), sizesFor(8192));
}

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
  exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), {0, 3, 4096, 5000, 100000});
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
  exchangeBothWays(ranks_, conn(0, 1), conn(1, 0), {0, 5, 70000, (1 << 20) + 7});
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

using bccltest::waitPolitely;

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
