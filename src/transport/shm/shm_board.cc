#include "transport/shm/shm_board.h"

#include <cstring>

namespace bccl {

ShmBoard::ShmBoard(int rank, std::vector<char*> segmentOfRank, size_t capacity)
    : rank_(rank),
      capacity_(capacity),
      groupBell_(&ShmGeometry::board(segmentOfRank[0])->bell),
      groupPosts_(&ShmGeometry::board(segmentOfRank[0])->posts) {
  for (char* seg : segmentOfRank) boards_.push_back(ShmGeometry::board(seg));
}

void ShmBoard::post(uint64_t seq, const void* data, size_t bytes, bool wakeAlways) {
  ShmBoardHeader* mine = boards_[rank_];
  if (bytes > 0) memcpy(const_cast<char*>(this->data(rank_, seq)), data, bytes);
  mine->posted[seq & 1].store(seq, std::memory_order_release);
  // seq_cst, like the doorbell: the count must not pass the posted store above, or the last
  // poster could ring before a waiter can see every post.
  const uint64_t total = groupPosts_->fetch_add(1, std::memory_order_seq_cst) + 1;
  if (wakeAlways || total % boards_.size() == 0) ringDoorbell(groupBell_);
}

bool ShmBoard::hasPosted(int rank, uint64_t seq) const {
  return boards_[rank]->posted[seq & 1].load(std::memory_order_acquire) == seq;
}

const char* ShmBoard::data(int rank, uint64_t seq) const {
  return reinterpret_cast<const char*>(boards_[rank] + 1) + (seq & 1) * capacity_;
}

}  // namespace bccl
