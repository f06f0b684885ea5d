#include "transport/shm/shm_connection.h"

#include <sched.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/bulk_copy.h"
#include "core/deadline.h"

namespace bccl {
namespace {

// Reductions read the remote buffer in pieces that stay in L2 while being reduced.
constexpr size_t kReduceBounceBytes = 128 * 1024;

Status readRemote(pid_t pid, char* dst, uint64_t remoteAddr, size_t bytes) {
  while (bytes > 0) {
    iovec local{dst, bytes};
    iovec remote{reinterpret_cast<void*>(remoteAddr), bytes};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errnoStatus("process_vm_readv", n < 0 ? errno : EFAULT);
    dst += n;
    remoteAddr += static_cast<uint64_t>(n);
    bytes -= static_cast<size_t>(n);
  }
  return Status::ok();
}

}  // namespace

bool canReadProcess(pid_t pid, const void* remoteAddr, const void* expected, size_t bytes) {
  std::vector<char> buf(bytes);
  return readRemote(pid, buf.data(), reinterpret_cast<uint64_t>(remoteAddr), bytes).isOk() &&
         memcmp(buf.data(), expected, bytes) == 0;
}

ShmConnection::ShmConnection(int peer, std::string peerName, const ShmGeometry& geometry,
                             const ShmEndpoints& ends, size_t cmaThreshold)
    : peer_(peer),
      peerName_(std::move(peerName)),
      geo_(geometry),
      ends_(ends),
      cmaThreshold_(cmaThreshold),
      bounce_(kReduceBounceBytes) {}

Status ShmConnection::postSend(const void* data, size_t bytes, uint64_t token) {
  if (broken_) return remoteError(peerName_ + ": shm connection already failed");
  bool descriptor = bytes >= cmaThreshold_ && bytes > 0 &&
                    ends_.outRing->receiverCanReadSender.load(std::memory_order_acquire) != 0;
  sends_.push_back(SendOp{static_cast<const char*>(data), bytes, 0, token, descriptor, 0, nullptr});
  return Status::ok();
}

Status ShmConnection::postRecv(const RecvTarget& target, size_t bytes, uint64_t token) {
  if (broken_) return remoteError(peerName_ + ": shm connection already failed");
  recvs_.push_back(RecvOp{target, bytes, 0, token});
  return Status::ok();
}

Status ShmConnection::progress(std::vector<uint64_t>* completed) {
  bool ringPeer = false;
  Status st = progressSends(completed, &ringPeer);
  if (st.isOk()) st = progressRecvs(completed, &ringPeer);
  // One doorbell ring per progress pass, not per slot: the peer re-scans everything anyway.
  if (ringPeer) ringDoorbell(ends_.peerBell);
  return st;
}

Status ShmConnection::progressSends(std::vector<uint64_t>* completed, bool* rang) {
  ShmRingHeader* ring = ends_.outRing;
  while (!awaitingAck_.empty() &&
         ring->acks.load(std::memory_order_acquire) >= awaitingAck_.front().ackNeeded) {
    completed->push_back(awaitingAck_.front().token);
    awaitingAck_.pop_front();
  }
  uint64_t head = ring->head.load(std::memory_order_relaxed);
  while (!sends_.empty()) {
    if (head - ring->tail.load(std::memory_order_acquire) >= geo_.slots) return Status::ok();
    SendOp& op = sends_.front();
    ShmSlotHeader* slot = geo_.slot(ring, head);
    slot->msgBytes = op.bytes;
    slot->offset = op.published;
    slot->seq = sendSeq_;
    if (op.descriptor) {
      slot->kind = ShmSlotKind::kDescriptor;
      slot->bytes = op.bytes;
      slot->remoteAddr = reinterpret_cast<uint64_t>(op.data);
      slot->descriptorState.store(kDescriptorPublished, std::memory_order_relaxed);
      op.slot = slot;
      op.published = op.bytes;
    } else {
      size_t n = std::min(geo_.slotBytes, op.bytes - op.published);
      slot->kind = ShmSlotKind::kInline;
      slot->bytes = n;
      copyBulk(ShmGeometry::slotData(slot), op.data + op.published, n);
      op.published += n;
    }
    ring->head.store(++head, std::memory_order_release);
    *rang = true;
    if (op.published < op.bytes) continue;
    ++sendSeq_;
    if (op.descriptor) {
      // The buffer is still being read by the peer: complete on its acknowledgement.
      op.ackNeeded = ++descriptorsPublished_;
      awaitingAck_.push_back(op);
    } else {
      completed->push_back(op.token);
    }
    sends_.pop_front();
  }
  return Status::ok();
}

Status ShmConnection::readDescriptor(const ShmSlotHeader& slot, RecvOp* op) {
  const RecvTarget& t = op->target;
  if (ends_.samePid) {
    t.deliver(0, reinterpret_cast<const char*>(slot.remoteAddr), op->bytes);
    return Status::ok();
  }
  if (t.operand == nullptr) return readRemote(ends_.peerPid, t.dst, slot.remoteAddr, op->bytes);
  const size_t piece = kReduceBounceBytes - kReduceBounceBytes % t.elemSize;
  for (size_t off = 0; off < op->bytes; off += piece) {
    size_t n = std::min(piece, op->bytes - off);
    BCCL_RETURN_IF_ERROR(readRemote(ends_.peerPid, bounce_.data(), slot.remoteAddr + off, n));
    t.deliver(off, bounce_.data(), n);
  }
  return Status::ok();
}

Status ShmConnection::progressRecvs(std::vector<uint64_t>* completed, bool* rang) {
  ShmRingHeader* ring = ends_.inRing;
  uint64_t tail = ring->tail.load(std::memory_order_relaxed);
  while (!recvs_.empty() && tail < ring->head.load(std::memory_order_acquire)) {
    RecvOp& op = recvs_.front();
    ShmSlotHeader* slot = geo_.slot(ring, tail);
    if (slot->msgBytes != op.bytes || slot->offset != op.delivered || slot->seq != recvSeq_) {
      broken_ = true;
      if (slot->msgBytes != op.bytes)
        return invalidUsage(peerName_ + " sent " + std::to_string(slot->msgBytes) +
                            " bytes where " + std::to_string(op.bytes) +
                            " were expected: mismatched counts or datatypes between ranks");
      return internalError(peerName_ + ": shm ring out of step");
    }
    if (slot->kind == ShmSlotKind::kDescriptor) {
      uint32_t expected = kDescriptorPublished;
      if (!slot->descriptorState.compare_exchange_strong(expected, kDescriptorClaimed)) {
        // The sender is alive but gave up because of another rank's failure: blame that one.
        broken_ = true;
        const int cause = slot->abandonCause;
        Status st = remoteError(peerName_ + " abandoned a message it had offered" +
                                (cause >= 0 ? " because rank " + std::to_string(cause) + " failed"
                                            : std::string(" (its operation failed)")));
        return cause >= 0 ? st.blaming(cause) : st;
      }
      Status st = readDescriptor(*slot, &op);
      slot->descriptorState.store(kDescriptorDone, std::memory_order_release);
      if (!st.isOk()) {
        broken_ = true;
        return remoteError(peerName_ + ": reading its buffer failed: " + st.message() +
                           " (the peer process may have exited)")
            .blaming(peer_);
      }
      op.delivered = op.bytes;
      ring->acks.fetch_add(1, std::memory_order_release);
    } else {
      op.target.deliver(op.delivered, ShmGeometry::slotData(slot), slot->bytes);
      op.delivered += slot->bytes;
    }
    ring->tail.store(++tail, std::memory_order_release);
    *rang = true;
    if (op.delivered == op.bytes) {
      ++recvSeq_;
      completed->push_back(op.token);
      recvs_.pop_front();
    }
  }
  return Status::ok();
}

void ShmConnection::addToWaitSet(WaitSet* set) const { set->addDoorbell(ends_.myBell); }

void ShmConnection::dropPending() {
  // Offered buffers must not be read once the caller gets its error back (it may free them):
  // cancel each unread offer, or wait (boundedly: a read takes milliseconds, and a reader that
  // died mid-read reads nothing more) for a read already under way to finish.
  for (const SendOp& op : awaitingAck_) {
    op.slot->abandonCause = failureCause_;
    uint32_t expected = kDescriptorPublished;
    if (op.slot->descriptorState.compare_exchange_strong(expected, kDescriptorCancelled)) continue;
    const int64_t giveUpNs = nowNs() + 2000 * 1000000LL;
    while (op.slot->descriptorState.load(std::memory_order_acquire) == kDescriptorClaimed &&
           nowNs() < giveUpNs)
      sched_yield();
  }
  sends_.clear();
  awaitingAck_.clear();
  recvs_.clear();
  broken_ = true;
}

}  // namespace bccl
