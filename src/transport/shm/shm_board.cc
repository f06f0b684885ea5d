#include "transport/shm/shm_board.h"

#include <cstring>

#include "core/bulk_copy.h"

namespace bccl {

ShmBoard::ShmBoard(int rank, std::vector<char*> segmentOfRank, size_t capacity)
    : rank_(rank), capacity_(capacity), groupBell_(&ShmGeometry::board(segmentOfRank[0])->bell) {
  for (char* seg : segmentOfRank) boards_.push_back(ShmGeometry::board(seg));
}

void ShmBoard::post(uint64_t seq, const void* data, size_t bytes, bool wakeAlways) {
  ShmBoardHeader* mine = boards_[rank_];
  copyBulk(const_cast<char*>(this->data(rank_, seq)), data, bytes);
  // All seq_cst, as the waiter's side (WaitSet::arm counts itself a sleeper, then re-checks
  // the posts): for every post, either the poster sees the sleeper, or the sleeper sees the
  // post. So when nobody sleeps yet, a waiter arming later finds every post done; and of the
  // posters that do see a sleeper, the last one sees every post, so some post rings.
  mine->posted[seq & 1].store(seq, std::memory_order_seq_cst);
  if (groupBell_->sleepers.load(std::memory_order_seq_cst) == 0) return;
  if (!wakeAlways)
    for (int r = 0; r < nranks(); ++r)
      if (!hasPosted(r, seq)) return;  // a later post completes the operation and rings
  ringDoorbell(groupBell_);
}

bool ShmBoard::hasPosted(int rank, uint64_t seq) const {
  // seq_cst (a plain load on x86): a waiter's re-check after arming is half of the handshake
  // in post().
  return boards_[rank]->posted[seq & 1].load(std::memory_order_seq_cst) == seq;
}

const char* ShmBoard::data(int rank, uint64_t seq) const {
  return reinterpret_cast<const char*>(boards_[rank] + 1) + (seq & 1) * capacity_;
}

}  // namespace bccl
