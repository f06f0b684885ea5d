// The receiving half of a multipath connection, independent of the wire. Chunks of a message
// arrive over any path in any order, and a chunk may arrive twice (resent after its path was
// declared failed, while the first copy was in fact on its way). Each chunk is delivered once:
// the first path to start it owns it; a second copy that arrives meanwhile is staged whole and
// finishes the chunk only if it completes first (a reduction delivered twice would be wrong).
// Chunks of messages not posted yet are staged too, so a path never stalls behind them: the
// acknowledgements and resent chunks queued behind them must get through.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <vector>

#include "core/status.h"
#include "transport/transport.h"

namespace bccl {

class RecvAssembly {
 public:
  enum class Mode { kDeliver, kStage, kDiscard };
  struct Placement {
    Mode mode = Mode::kDiscard;
    uint64_t skip = 0;  // kDeliver: leading bytes an earlier attempt already delivered
  };

  void post(const RecvTarget& target, uint64_t bytes, uint64_t token);
  // A chunk's header arrived on `path`: how to handle its payload. An error means the peers
  // disagree about the message (sizes), which no resend can fix.
  StatusOr<Placement> begin(int path, uint64_t seq, uint64_t msgBytes, uint64_t offset,
                            uint64_t len);
  // For a path delivering a chunk: where the bytes go, or null if the chunk was finished
  // meanwhile by another copy (the rest of this one must be discarded).
  const RecvTarget* owned(int path, uint64_t seq, uint64_t offset) const;
  // The chunk's first `upTo` bytes are in place.
  void advance(uint64_t seq, uint64_t offset, uint64_t upTo);
  // The path delivered the whole chunk.
  void finish(int path, uint64_t seq, uint64_t offset, std::vector<uint64_t>* completed);
  // A whole staged chunk.
  Status staged(uint64_t seq, uint64_t msgBytes, uint64_t offset, std::vector<char> data,
                std::vector<uint64_t>* completed);
  // `path` failed: chunks it was delivering can be finished by a resent copy.
  void abandon(int path);
  // Messages completed when posted (from staged chunks), and any error found then.
  Status takeReady(std::vector<uint64_t>* completed);
  bool expecting() const { return !msgs_.empty(); }
  // Some posted, unfinished message is larger than `bytes` (its chunks may use any path).
  bool expectsMoreThan(uint64_t bytes) const;
  uint64_t stagedBytes() const { return earlyBytes_; }
  void clear();

 private:
  struct Chunk {
    uint64_t len = 0;
    uint64_t delivered = 0;
    int busy = -1;  // the path delivering it
    bool done = false;
  };
  struct Msg {
    RecvTarget target;
    uint64_t bytes = 0;
    uint64_t token = 0;
    uint64_t doneBytes = 0;
    bool anyDone = false;
    bool complete = false;
    std::map<uint64_t, Chunk> chunks;  // by offset
  };
  struct Early {
    uint64_t msgBytes;
    uint64_t offset;
    std::vector<char> data;
  };
  Msg* find(uint64_t seq);
  const Msg* find(uint64_t seq) const;
  Status check(const Msg& m, uint64_t msgBytes, uint64_t offset, uint64_t len) const;
  void markDone(Msg& m, Chunk& c, std::vector<uint64_t>* completed);
  Status apply(Msg& m, Early& e, std::vector<uint64_t>* completed);

  std::deque<Msg> msgs_;
  uint64_t base_ = 0;  // seq of msgs_.front()
  uint64_t nextSeq_ = 0;
  std::map<uint64_t, std::vector<Early>> early_;  // chunks of messages not posted yet
  uint64_t earlyBytes_ = 0;
  std::vector<uint64_t> ready_;
  Status pendingError_;
};

}  // namespace bccl
