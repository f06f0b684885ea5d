// Boards (transport/shm/shm_board.h): every rank reads every post; while someone sleeps, only
// the post that completes an operation rings the group's doorbell (or a post whose readers wait
// for that rank alone), whatever order the ranks post in, and while nobody sleeps no post
// touches the doorbell. A ring per post woke every sleeper n - 1 times in vain. A real sleeper
// on the doorbell is woken by the completing post.
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
    // ShmGeometry::board() is 64 bytes into a segment.
    const ShmGeometry geo{0, 0, static_cast<size_t>(n), kCapacity};
    const size_t bytes = 64 + geo.boardBytes();
    for (int r = 0; r < n; ++r) {
      memory_.emplace_back(new (std::align_val_t{64}) char[bytes]());
      new (ShmGeometry::board(memory_.back().get())) ShmBoardHeader();
      pointers_.push_back(memory_.back().get());
    }
  }
  const std::vector<char*>& pointers() const { return pointers_; }
  Doorbell* bell() const { return &ShmGeometry::board(pointers_[0])->bell; }
  uint32_t rings() const { return bell()->seq.load(); }

 private:
  struct AlignedDelete {
    void operator()(char* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::vector<std::unique_ptr<char[], AlignedDelete>> memory_;
  std::vector<char*> pointers_;
};

// Posts operations 1 and 2 of `n` boards, 1 in rank order and 2 in another, and returns for
// each post whether it rang the group's doorbell; every rank reads every post.
std::vector<bool> ringsOfTwoOperations(Segments& segs, int n) {
  std::vector<ShmBoard> boards;
  for (int r = 0; r < n; ++r) boards.emplace_back(r, segs.pointers(), kCapacity);
  std::vector<std::vector<int>> orders{{}, {}};
  for (int r = 0; r < n; ++r) {
    orders[0].push_back(r);
    orders[1].push_back((r + n - 1) % n);
  }
  std::vector<bool> rang;
  for (size_t op = 0; op < orders.size(); ++op) {
    for (int r = 0; r < n; ++r) EXPECT_EQ(boards[r].beginOp(), op + 1);
    for (int r : orders[op]) {
      const int value = 100 * static_cast<int>(op) + r;
      const uint32_t before = segs.rings();
      boards[r].post(op + 1, &value, sizeof value);
      rang.push_back(segs.rings() != before);
    }
    for (int reader = 0; reader < n; ++reader)
      for (int r = 0; r < n; ++r) {
        EXPECT_TRUE(boards[reader].hasPosted(r, op + 1));
        int got = -1;
        memcpy(&got, boards[reader].data(r, op + 1), sizeof got);
        EXPECT_EQ(got, 100 * static_cast<int>(op) + r);
      }
  }
  return rang;
}

TEST(ShmBoard, WithASleeperOnlyThePostThatCompletesAnOperationRings) {
  constexpr int n = 3;
  Segments segs(n);
  segs.bell()->sleepers = 1;  // as if a rank slept on the doorbell throughout
  const std::vector<bool> rang = ringsOfTwoOperations(segs, n);
  EXPECT_EQ(rang, (std::vector<bool>{false, false, true, false, false, true}));
}

TEST(ShmBoard, WithNobodyAsleepNoPostRings) {
  constexpr int n = 3;
  Segments segs(n);
  const std::vector<bool> rang = ringsOfTwoOperations(segs, n);
  EXPECT_EQ(rang, std::vector<bool>(2 * n, false));
}

TEST(ShmBoard, APostWhoseReadersWaitForItAloneRingsAtOnce) {
  Segments segs(4);
  segs.bell()->sleepers = 1;
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
