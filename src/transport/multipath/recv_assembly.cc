#include "transport/multipath/recv_assembly.h"

#include <algorithm>
#include <string>

namespace bccl {

RecvAssembly::Msg* RecvAssembly::find(uint64_t seq) {
  if (seq < base_ || seq >= nextSeq_) return nullptr;
  return &msgs_[seq - base_];
}

const RecvAssembly::Msg* RecvAssembly::find(uint64_t seq) const {
  if (seq < base_ || seq >= nextSeq_) return nullptr;
  return &msgs_[seq - base_];
}

Status RecvAssembly::check(const Msg& m, uint64_t msgBytes, uint64_t offset, uint64_t len) const {
  if (msgBytes != m.bytes)
    return invalidUsage("sent " + std::to_string(msgBytes) + " bytes where " +
                        std::to_string(m.bytes) +
                        " were expected: mismatched counts or datatypes between ranks");
  if (offset > m.bytes || len > m.bytes - offset)
    return internalError("chunk [" + std::to_string(offset) + ", +" + std::to_string(len) +
                         ") outside a message of " + std::to_string(m.bytes) + " bytes");
  return Status::ok();
}

void RecvAssembly::post(const RecvTarget& target, uint64_t bytes, uint64_t token) {
  if (msgs_.empty()) base_ = nextSeq_;
  Msg m;
  m.target = target;
  m.bytes = bytes;
  m.token = token;
  msgs_.push_back(std::move(m));
  const uint64_t seq = nextSeq_++;
  auto it = early_.find(seq);
  if (it == early_.end()) return;
  std::vector<Early> chunks = std::move(it->second);
  early_.erase(it);
  for (Early& e : chunks) {
    earlyBytes_ -= e.data.size();
    Msg* msg = find(seq);
    if (msg == nullptr || msg->complete) break;
    Status st = apply(*msg, e, &ready_);
    if (!st.isOk() && pendingError_.isOk()) pendingError_ = st;
  }
  while (!msgs_.empty() && msgs_.front().complete) {
    msgs_.pop_front();
    ++base_;
  }
}

StatusOr<RecvAssembly::Placement> RecvAssembly::begin(int path, uint64_t seq, uint64_t msgBytes,
                                                      uint64_t offset, uint64_t len) {
  Placement p;
  if (seq < base_) return p;  // a late copy of a finished message
  if (seq >= nextSeq_) {
    auto it = early_.find(seq);
    if (it != early_.end())
      for (const Early& e : it->second)
        if (e.offset == offset) return p;
    p.mode = Mode::kStage;
    return p;
  }
  Msg& m = *find(seq);
  if (m.complete) return p;
  BCCL_RETURN_IF_ERROR(check(m, msgBytes, offset, len));
  auto ins = m.chunks.emplace(offset, Chunk{});
  Chunk& c = ins.first->second;
  if (ins.second) {
    c.len = len;
  } else if (c.len != len) {
    return internalError("chunk at " + std::to_string(offset) + " arrived with " +
                         std::to_string(len) + " bytes, earlier with " + std::to_string(c.len));
  }
  if (c.done) return p;
  if (c.busy >= 0 && c.busy != path) {
    p.mode = Mode::kStage;
    return p;
  }
  c.busy = path;
  p.mode = Mode::kDeliver;
  p.skip = c.delivered;
  return p;
}

const RecvTarget* RecvAssembly::owned(int path, uint64_t seq, uint64_t offset) const {
  const Msg* m = find(seq);
  if (m == nullptr || m->complete) return nullptr;
  auto it = m->chunks.find(offset);
  if (it == m->chunks.end() || it->second.done || it->second.busy != path) return nullptr;
  return &m->target;
}

void RecvAssembly::advance(uint64_t seq, uint64_t offset, uint64_t upTo) {
  Msg* m = find(seq);
  if (m == nullptr) return;
  auto it = m->chunks.find(offset);
  if (it != m->chunks.end()) it->second.delivered = std::max(it->second.delivered, upTo);
}

void RecvAssembly::markDone(Msg& m, Chunk& c, std::vector<uint64_t>* completed) {
  c.done = true;
  c.busy = -1;
  c.delivered = c.len;
  m.doneBytes += c.len;
  m.anyDone = true;
  if (m.doneBytes == m.bytes && !m.complete) {
    m.complete = true;
    m.chunks.clear();
    completed->push_back(m.token);
  }
}

void RecvAssembly::finish(int path, uint64_t seq, uint64_t offset,
                          std::vector<uint64_t>* completed) {
  Msg* m = find(seq);
  if (m == nullptr || m->complete) return;
  auto it = m->chunks.find(offset);
  if (it == m->chunks.end() || it->second.done || it->second.busy != path) return;
  markDone(*m, it->second, completed);
  while (!msgs_.empty() && msgs_.front().complete) {
    msgs_.pop_front();
    ++base_;
  }
}

Status RecvAssembly::apply(Msg& m, Early& e, std::vector<uint64_t>* completed) {
  const uint64_t len = e.data.size();
  BCCL_RETURN_IF_ERROR(check(m, e.msgBytes, e.offset, len));
  auto ins = m.chunks.emplace(e.offset, Chunk{});
  Chunk& c = ins.first->second;
  if (ins.second) c.len = len;
  if (c.len != len) return internalError("a resent chunk differs in length from the first copy");
  if (c.done) return Status::ok();
  // Whatever an abandoned or slower copy already delivered stays; the rest comes from here.
  m.target.deliver(e.offset + c.delivered, e.data.data() + c.delivered, len - c.delivered);
  markDone(m, c, completed);
  return Status::ok();
}

Status RecvAssembly::staged(uint64_t seq, uint64_t msgBytes, uint64_t offset,
                            std::vector<char> data, std::vector<uint64_t>* completed) {
  if (seq < base_) return Status::ok();
  Early e{msgBytes, offset, std::move(data)};
  if (seq >= nextSeq_) {
    std::vector<Early>& list = early_[seq];
    for (const Early& other : list)
      if (other.offset == offset) return Status::ok();
    earlyBytes_ += e.data.size();
    list.push_back(std::move(e));
    return Status::ok();
  }
  Msg& m = *find(seq);
  if (m.complete) return Status::ok();
  BCCL_RETURN_IF_ERROR(apply(m, e, completed));
  while (!msgs_.empty() && msgs_.front().complete) {
    msgs_.pop_front();
    ++base_;
  }
  return Status::ok();
}

bool RecvAssembly::expectsMoreThan(uint64_t bytes) const {
  for (const Msg& m : msgs_)
    if (!m.complete && m.bytes > bytes) return true;
  return false;
}

void RecvAssembly::abandon(int path) {
  for (Msg& m : msgs_)
    for (auto& kv : m.chunks)
      if (kv.second.busy == path) kv.second.busy = -1;
}

Status RecvAssembly::takeReady(std::vector<uint64_t>* completed) {
  completed->insert(completed->end(), ready_.begin(), ready_.end());
  ready_.clear();
  Status st = pendingError_;
  pendingError_ = Status::ok();
  return st;
}

void RecvAssembly::clear() {
  msgs_.clear();
  early_.clear();
  earlyBytes_ = 0;
  ready_.clear();
  base_ = nextSeq_;
  pendingError_ = Status::ok();
}

}  // namespace bccl
