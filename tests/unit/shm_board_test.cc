// Boards (transport/shm/shm_board.h): every rank reads every post, and only the post that
// completes an operation rings the group's doorbell (or a post whose readers wait for that rank
// alone), whatever order the ranks post in. A ring per post woke every sleeper n - 1 times in
// vain. A sleeper on the doorbell is woken by the completing post.
#include "transport/shm/shm_board.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <new>
#include <thread>
#include <vector>

#include "transport/shm/shm_layout.h"
#include "transport/wait_set.h"

namespace bccl {
namespace {

constexpr size_t kCapacity = 64;

// Stand-ins for the ranks' mapped segments: only the board part of each is used.
class Segments {
 public:
  explicit Segments(int n) {
    const size_t bytes = 64 + sizeof(ShmBoardHeader) + 2 * kCapacity;
    for (int r = 0; r < n; ++r) {
      memory_.emplace_back(new (std::align_val_t{64}) char[bytes]());
      new (ShmGeometry::board(memory_.back().get())) ShmBoardHeader();
      pointers_.push_back(memory_.back().get());
    }
  }
  const std::vector<char*>& pointers() const { return pointers_; }
  uint32_t rings() const { return ShmGeometry::board(pointers_[0])->bell.seq.load(); }

 private:
  struct AlignedDelete {
    void operator()(char* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::vector<std::unique_ptr<char[], AlignedDelete>> memory_;
  std::vector<char*> pointers_;
};

TEST(ShmBoard, OnlyThePostThatCompletesAnOperationRings) {
  constexpr int n = 3;
  Segments segs(n);
  std::vector<ShmBoard> boards;
  for (int r = 0; r < n; ++r) boards.emplace_back(r, segs.pointers(), kCapacity);
  // Operation 1 in rank order, operation 2 in another order: the third post rings each time.
  const std::vector<std::vector<int>> orders{{0, 1, 2}, {2, 0, 1}};
  uint32_t rings = segs.rings();
  for (size_t op = 0; op < orders.size(); ++op) {
    for (int r = 0; r < n; ++r) ASSERT_EQ(boards[r].beginOp(), op + 1);
    for (size_t i = 0; i < orders[op].size(); ++i) {
      const int r = orders[op][i];
      const int value = 100 * static_cast<int>(op) + r;
      boards[r].post(op + 1, &value, sizeof value);
      const bool last = i + 1 == orders[op].size();
      EXPECT_EQ(segs.rings(), rings + (last ? 1 : 0)) << "operation " << op + 1 << ", post " << i;
    }
    rings = segs.rings();
    for (int reader = 0; reader < n; ++reader)
      for (int r = 0; r < n; ++r) {
        ASSERT_TRUE(boards[reader].hasPosted(r, op + 1));
        int got = -1;
        memcpy(&got, boards[reader].data(r, op + 1), sizeof got);
        EXPECT_EQ(got, 100 * static_cast<int>(op) + r);
      }
  }
}

TEST(ShmBoard, APostWhoseReadersWaitForItAloneRingsAtOnce) {
  Segments segs(4);
  ShmBoard root(2, segs.pointers(), kCapacity);
  const uint32_t before = segs.rings();
  const char byte = 7;
  root.post(root.beginOp(), &byte, 1, /*wakeAlways=*/true);
  EXPECT_EQ(segs.rings(), before + 1);
}

TEST(ShmBoard, ASleeperOnTheDoorbellWakesWhenTheLastRankPosts) {
  constexpr int n = 2;
  Segments segs(n);
  ShmBoard first(0, segs.pointers(), kCapacity), second(1, segs.pointers(), kCapacity);
  const uint64_t seq = first.beginOp();
  ASSERT_EQ(second.beginOp(), seq);
  const int a = 1, b = 2;
  first.post(seq, &a, sizeof a);  // not the last: no ring
  constexpr int kSleepUs = 30 * 1000 * 1000;
  std::atomic<int64_t> sleptNs{-1};
  std::thread sleeper([&] {
    WaitSet waits;
    waits.addDoorbell(first.groupBell());
    waits.arm();
    const auto start = std::chrono::steady_clock::now();
    if (!first.hasPosted(1, seq)) waits.wait(kSleepUs);
    sleptNs = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    waits.disarm();
  });
  // Post only once the sleeper has armed, so the wake-up must come from this post's ring.
  while (first.groupBell()->sleepers.load() == 0) std::this_thread::yield();
  second.post(seq, &b, sizeof b);
  sleeper.join();
  // Woken, not timed out: a missing ring shows as the whole 30 s (the margin is for a loaded
  // machine, not a performance bound).
  EXPECT_LT(sleptNs.load(), kSleepUs * 1000LL / 2);
  EXPECT_TRUE(first.hasPosted(1, seq));
}

}  // namespace
}  // namespace bccl
