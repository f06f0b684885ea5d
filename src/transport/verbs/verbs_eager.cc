// The eager path of VerbsConnection (see verbs_wire.h): small messages written at once into
// the receiver's eager ring while the sender holds credits, taken there by the matching
// receive (or kept as unexpected until it is posted), credits returned in batches, and the
// lazy grants that keep a sender without credits (or with the wrong size) from waiting forever.
#include <arpa/inet.h>

#include <cstring>

#include "core/deadline.h"
#include "transport/verbs/verbs_connection.h"

namespace bccl {
namespace {

// A small receive whose eager message has not come after this long is granted a ring slot
// anyway: its sender may be out of eager credits, or sending a message too large for eager.
constexpr int64_t kLazyGrantNs = 1000000;

}  // namespace

bool VerbsConnection::grantDue(const RecvOp& op, int64_t now) const {
  if (!eagerEnabled() || op.bytes > eagerBytes_) return true;
  return now - op.postedNs >= kLazyGrantNs;
}

ibv_send_wr VerbsConnection::immOnlyWr(uint64_t wrId, uint32_t imm, uint64_t addr, uint32_t rkey) {
  // A zero-length write: no data, only the immediate (and a receive entry consumed there).
  ibv_send_wr wr{};
  wr.wr_id = wrId;
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.imm_data = htonl(imm);
  wr.wr.rdma.remote_addr = addr;
  wr.wr.rdma.rkey = rkey;
  return wr;
}

Status VerbsConnection::postCtrlImm(uint64_t wrId, uint32_t imm, uint64_t addr, uint32_t rkey) {
  ibv_send_wr wr = immOnlyWr(wrId, imm, addr, rkey);
  ibv_send_wr* bad = nullptr;
  int rc = ibv_post_send(ctrl_, &wr, &bad);
  if (rc != 0)
    return systemError(peerName_ + ": verbs cannot post a notice on QP " +
                       std::to_string(ctrl_->qp_num) + ": " + strerror(rc));
  return Status::ok();
}

Status VerbsConnection::trySendEager(SendOp& op) {
  if (!eagerEnabled() || op.bytes > eagerBytes_) return Status::ok();
  const uint32_t inUse = (eagerSent_ - eagerPeerFreed_) & kVerbsImmIndexMask;
  if (inUse >= eagerSlots_ || eagerOutBusy_ >= eagerSlots_) return Status::ok();
  // A grant for it already here is cheaper to use than a slot plus a cancel.
  for (const Qp& q : qps_)
    for (const VerbsGrant& g : q.pending)
      if (g.seq == op.seq) return Status::ok();
  const uint32_t slot = eagerOutHead_;
  char* out = eagerOut_ + slot * eagerStride_;
  VerbsEagerHeader h;
  h.seq = op.seq;
  h.bytes = static_cast<uint32_t>(op.bytes);
  memcpy(out, &h, sizeof(h));
  if (op.bytes > 0) memcpy(out + kVerbsEagerHeader, op.data, op.bytes);
  ibv_sge sge{reinterpret_cast<uint64_t>(out), static_cast<uint32_t>(kVerbsEagerHeader + op.bytes),
              eagerOutMr_->lkey};
  ibv_send_wr wr{};
  wr.wr_id = sendWrId(kWrEager, 0, op.seq);
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.imm_data = htonl(makeImm(VerbsImm::kEager, slot));
  wr.wr.rdma.remote_addr = remote_.eagerAddr + slot * eagerStride_;
  wr.wr.rdma.rkey = remote_.eagerRkey;
  ibv_send_wr* bad = nullptr;
  // On the control QP: it is never failed over, so an eager message cannot be lost with a QP.
  int rc = ibv_post_send(ctrl_, &wr, &bad);
  if (rc != 0)
    return systemError(peerName_ + ": verbs cannot post an eager write on QP " +
                       std::to_string(ctrl_->qp_num) + ": " + strerror(rc));
  eagerOutHead_ = (eagerOutHead_ + 1) % eagerSlots_;
  eagerSent_ = (eagerSent_ + 1) & kVerbsImmIndexMask;
  ++eagerOutBusy_;
  op.eager = true;
  op.postedBytes = op.bytes;
  op.chunksPosted = 1;
  op.inflight = 1;
  // The payload is copied: the caller's buffer is free again.
  op.reported = true;
  early_.push_back(op.token);
  return Status::ok();
}

Status VerbsConnection::onEager(uint32_t slot, std::vector<uint64_t>* completed) {
  if (!eagerEnabled() || slot >= eagerSlots_)
    return internalError(peerName_ + ": verbs: eager message in slot " + std::to_string(slot) +
                         " out of range");
  VerbsEagerHeader h;
  memcpy(&h, eagerIn_ + slot * eagerStride_, sizeof(h));
  if (h.bytes > eagerBytes_)
    return internalError(peerName_ + ": verbs: eager message of " + std::to_string(h.bytes) +
                         " bytes");
  RecvOp* op = recvBySeq(h.seq);
  if (op != nullptr) return takeEager(*op, slot, completed);
  if (static_cast<int32_t>(h.seq - recvSeq_) < 0)
    return internalError(peerName_ + ": verbs: eager message for finished message " +
                         std::to_string(h.seq));
  // Its receive is not posted yet: the slot holds it until then (the sender's credit too).
  unexpected_.emplace_back(h.seq, slot);
  return Status::ok();
}

Status VerbsConnection::takeEager(RecvOp& op, uint32_t slot, std::vector<uint64_t>* completed) {
  const char* in = eagerIn_ + slot * eagerStride_;
  VerbsEagerHeader h;
  memcpy(&h, in, sizeof(h));
  if (op.eagerTaken || op.reported)
    return internalError(peerName_ + ": verbs: second eager message for one receive");
  if (h.bytes != op.bytes) {
    // Tell the sender too (its send already completed): it fails at its next progress.
    const uint32_t expected = static_cast<uint32_t>(std::min<size_t>(op.bytes, kVerbsImmIndexMask));
    if (postCtrlImm(sendWrId(kWrMismatch, 0, op.seq), makeImm(VerbsImm::kEagerMismatch, expected),
                    remote_.eagerAddr, remote_.eagerRkey)
            .isOk())
      waitForNotice();
    return invalidUsage(peerName_ + " sent " + std::to_string(h.bytes) + " bytes where " +
                        std::to_string(op.bytes) +
                        " were expected: mismatched counts or datatypes between ranks");
  }
  op.target.deliver(0, in + kVerbsEagerHeader, h.bytes);
  op.eagerTaken = true;
  op.granted = true;  // no further grants; one already out is cancelled by the sender
  op.receivedBytes = op.bytes;
  eagerFreed_ = (eagerFreed_ + 1) & kVerbsImmIndexMask;
  finishRecv(op, completed);
  return maybeReturnCredits(false);
}

Status VerbsConnection::postCancel(uint32_t qi, uint32_t grantIndex, uint32_t seq) {
  // On the grant's own data QP: the peer takes answers there in grant order.
  ibv_send_wr wr = immOnlyWr(sendWrId(kWrCancel, qi, seq), makeImm(VerbsImm::kCancel, grantIndex),
                             remote_.qp[qi].ringAddr, remote_.qp[qi].ringRkey);
  return postDataWr(qi, &wr);
}

Status VerbsConnection::maybeReturnCredits(bool force) {
  if (!eagerEnabled() || creditInFlight_) return Status::ok();
  const uint32_t unannounced = (eagerFreed_ - eagerAnnounced_) & kVerbsImmIndexMask;
  // In batches: one credit immediate per half ring, unless a small receive is starving.
  if (unannounced == 0 || (!force && unannounced < std::max(1u, eagerSlots_ / 2)))
    return Status::ok();
  BCCL_RETURN_IF_ERROR(postCtrlImm(sendWrId(kWrCredit, 0, 0),
                                   makeImm(VerbsImm::kCredit, eagerFreed_), remote_.eagerAddr,
                                   remote_.eagerRkey));
  eagerAnnounced_ = eagerFreed_;
  creditInFlight_ = true;
  return Status::ok();
}

}  // namespace bccl
