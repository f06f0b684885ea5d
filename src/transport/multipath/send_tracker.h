// The sending half of a multipath connection, independent of the wire: posted messages cut into
// chunks on demand, which chunks each path carries until the peer acknowledges them, and the
// chunks a failed path leaves behind, which are sent again over the others. A message completes
// once the peer acknowledged all of it, because until then its bytes may have to be sent again;
// small messages are copied instead and complete once written (a copy costs less than the wait).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <set>
#include <vector>

namespace bccl {

// A piece of one message: the unit that travels on a path and is acknowledged or resent.
struct ChunkRef {
  uint64_t seq = 0;  // the message's number on this connection (posting order)
  uint64_t offset = 0;
  uint64_t len = 0;
  bool operator<(const ChunkRef& o) const { return seq != o.seq ? seq < o.seq : offset < o.offset; }
};

// Chunks handed to one path, oldest first, until its cumulative acknowledgements retire them.
class PathFlight {
 public:
  struct Entry {
    ChunkRef chunk;
    int64_t sentNs;
  };
  void sent(const ChunkRef& c, int64_t nowNs);
  // The peer consumed the first `frames` chunks ever sent on this path: pops the newly covered
  // ones into `acked` (in order).
  void ackUpTo(uint64_t frames, std::vector<Entry>* acked);
  // Everything not acknowledged (the path failed); the flight is empty afterwards.
  std::vector<ChunkRef> drain();
  uint64_t bytes() const { return bytes_; }
  bool empty() const { return entries_.empty(); }
  int64_t oldestSentNs() const { return entries_.empty() ? 0 : entries_.front().sentNs; }
  void reset();

 private:
  std::deque<Entry> entries_;
  uint64_t firstFrame_ = 0;  // frame number of entries_.front()
  uint64_t bytes_ = 0;
};

class SendTracker {
 public:
  // Messages of at most `copyBytes` are copied when posted and complete once written.
  explicit SendTracker(uint64_t copyBytes) : copyBytes_(copyBytes) {}

  void post(const void* data, uint64_t bytes, uint64_t token);
  bool hasWork() const { return !resend_.empty() || cursor_ < msgs_.size(); }
  // Bytes waiting for a path: resends plus what no path took yet.
  uint64_t backlog() const { return backlog_; }
  // The next chunk to send (resends first, oldest first), at most `maxChunk` bytes (a multiple
  // of 64, so pieces of a reduction stay whole elements); copied messages are never cut.
  ChunkRef peek(uint64_t maxChunk) const;
  // `c` (from peek) is now on its way.
  void take(const ChunkRef& c);
  const char* payload(const ChunkRef& c) const;
  uint64_t messageBytes(uint64_t seq) const;
  // Whether the message was copied (complete once written): otherwise its completion waits for
  // the peer's acknowledgement, which the peer should then send at once.
  bool copied(uint64_t seq) const { return at(seq).copied; }
  // `c` was written out whole: completes a copied message.
  void written(const ChunkRef& c, std::vector<uint64_t>* completed);
  // The peer has `c`: completes a message once all of it is acknowledged.
  void acked(const ChunkRef& c, std::vector<uint64_t>* completed);
  // `c` was lost with its path: send it again.
  void resend(const ChunkRef& c);
  // Nothing posted is unacknowledged.
  bool empty() const { return msgs_.empty(); }
  // Some posted message has not completed yet.
  bool hasUnreported() const { return unreported_ > 0; }
  void clear();

 private:
  struct Msg {
    const char* data = nullptr;
    std::vector<char> copy;
    bool copied = false;
    uint64_t bytes = 0;
    uint64_t token = 0;
    uint64_t assigned = 0;  // bytes cut into chunks so far
    bool started = false;   // a zero-byte message still travels as one empty chunk
    uint64_t ackedBytes = 0;
    bool ackedAny = false;
    bool reported = false;
  };
  Msg& at(uint64_t seq) { return msgs_[seq - base_]; }
  const Msg& at(uint64_t seq) const { return msgs_[seq - base_]; }
  static bool fullyAssigned(const Msg& m) { return m.started && m.assigned == m.bytes; }
  void report(Msg& m, std::vector<uint64_t>* completed);
  void retire();

  const uint64_t copyBytes_;
  std::deque<Msg> msgs_;
  uint64_t base_ = 0;  // seq of msgs_.front()
  size_t cursor_ = 0;  // index of the first message not fully cut into chunks
  uint64_t nextSeq_ = 0;
  uint64_t backlog_ = 0;
  size_t unreported_ = 0;
  std::set<ChunkRef> resend_;
};

}  // namespace bccl
