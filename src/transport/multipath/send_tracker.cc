#include "transport/multipath/send_tracker.h"

#include <algorithm>
#include <cstring>

namespace bccl {

void PathFlight::sent(const ChunkRef& c, int64_t nowNs) {
  entries_.push_back({c, nowNs});
  bytes_ += c.len;
}

void PathFlight::ackUpTo(uint64_t frames, std::vector<Entry>* acked) {
  while (!entries_.empty() && firstFrame_ < frames) {
    bytes_ -= entries_.front().chunk.len;
    acked->push_back(entries_.front());
    entries_.pop_front();
    ++firstFrame_;
  }
}

std::vector<ChunkRef> PathFlight::drain() {
  std::vector<ChunkRef> out;
  for (const Entry& e : entries_) out.push_back(e.chunk);
  reset();
  return out;
}

void PathFlight::reset() {
  entries_.clear();
  firstFrame_ = 0;
  bytes_ = 0;
}

void SendTracker::post(const void* data, uint64_t bytes, uint64_t token) {
  Msg m;
  m.bytes = bytes;
  m.token = token;
  if (bytes <= copyBytes_) {
    m.copied = true;
    m.copy.assign(static_cast<const char*>(data), static_cast<const char*>(data) + bytes);
    m.data = m.copy.data();
  } else {
    m.data = static_cast<const char*>(data);
  }
  msgs_.push_back(std::move(m));
  if (msgs_.size() == 1) base_ = nextSeq_;
  ++nextSeq_;
  ++unreported_;
  backlog_ += bytes;
}

ChunkRef SendTracker::peek(uint64_t maxChunk) const {
  if (!resend_.empty()) return *resend_.begin();
  const Msg& m = msgs_[cursor_];
  ChunkRef c;
  c.seq = base_ + cursor_;
  c.offset = m.assigned;
  const uint64_t left = m.bytes - m.assigned;
  c.len = m.bytes <= copyBytes_ ? left : std::min(left, std::max<uint64_t>(maxChunk, 64));
  return c;
}

void SendTracker::take(const ChunkRef& c) {
  backlog_ -= c.len;
  auto it = resend_.find(c);
  if (it != resend_.end()) {
    resend_.erase(it);
    return;
  }
  Msg& m = at(c.seq);
  m.assigned += c.len;
  m.started = true;
  while (cursor_ < msgs_.size() && fullyAssigned(msgs_[cursor_])) ++cursor_;
}

const char* SendTracker::payload(const ChunkRef& c) const { return at(c.seq).data + c.offset; }

uint64_t SendTracker::messageBytes(uint64_t seq) const { return at(seq).bytes; }

void SendTracker::report(Msg& m, std::vector<uint64_t>* completed) {
  if (m.reported) return;
  m.reported = true;
  --unreported_;
  completed->push_back(m.token);
}

void SendTracker::written(const ChunkRef& c, std::vector<uint64_t>* completed) {
  Msg& m = at(c.seq);
  if (m.copied) report(m, completed);
}

void SendTracker::acked(const ChunkRef& c, std::vector<uint64_t>* completed) {
  Msg& m = at(c.seq);
  m.ackedBytes += c.len;
  m.ackedAny = true;
  if (m.ackedBytes == m.bytes) report(m, completed);
  retire();
}

void SendTracker::retire() {
  while (!msgs_.empty() && cursor_ > 0 && msgs_.front().ackedAny &&
         msgs_.front().ackedBytes == msgs_.front().bytes) {
    msgs_.pop_front();
    ++base_;
    --cursor_;
  }
}

void SendTracker::resend(const ChunkRef& c) {
  if (resend_.insert(c).second) backlog_ += c.len;
}

void SendTracker::clear() {
  msgs_.clear();
  resend_.clear();
  base_ = nextSeq_;
  cursor_ = 0;
  backlog_ = 0;
  unreported_ = 0;
}

}  // namespace bccl
