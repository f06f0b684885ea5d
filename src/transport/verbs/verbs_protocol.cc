// The grant protocol of VerbsConnection (see verbs_wire.h and verbs_connection.h): issuing
// grants for posted receives, answering the peer's grants with data writes, and turning
// completions into finished operations or errors that name the peer, the QP and the status.
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "core/bulk_copy.h"
#include "core/deadline.h"
#include "core/logging.h"
#include "transport/verbs/verbs_connection.h"

namespace bccl {
namespace {

constexpr int kPollBatch = 32;
// How long a sender that found a size mismatch waits for its notice to the receiver to leave.
constexpr int kNoticeWaitMs = 1000;
// Zero-copy grants split a message over the QPs in pieces of at least this much.
constexpr size_t kDirectChunkAlign = 4096;

const char* hint(ibv_wc_status s) {
  switch (s) {
    case IBV_WC_RETRY_EXC_ERR:
      return " (no acknowledgement from the peer: its process died or the path is down)";
    case IBV_WC_RNR_RETRY_EXC_ERR:
      return " (the peer posted no receive in time)";
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_REM_INV_REQ_ERR:
      return " (the peer refused the write: its connection or registration is gone)";
    case IBV_WC_WR_FLUSH_ERR:
      return " (flushed: the QP had already failed)";
    default:
      return "";
  }
}

}  // namespace

Status VerbsConnection::completionError(const ibv_wc& wc, uint32_t rail) {
  // wc.opcode is undefined in an error completion: say what failed from the wr_id instead.
  const bool recv = (wc.wr_id >> 56) == 0;
  static const char* const kWhat[] = {
      "?",           "grant write",  "data write",   "size-mismatch notice",
      "eager write", "grant cancel", "credit return"};
  const uint64_t kind = wc.wr_id >> 56;
  const char* what = recv ? "receive" : kind < 7 ? kWhat[kind] : "?";
  char vendor[32];
  snprintf(vendor, sizeof(vendor), "vendor error 0x%x", wc.vendor_err);
  std::string msg = peerName_ + ": verbs " + what + " on QP " + std::to_string(wc.qp_num) + " (" +
                    ctx_->port(rail).device + ":" + std::to_string(ctx_->port(rail).port) +
                    ") failed: " + ibv_wc_status_str(wc.status) + ", " + vendor + hint(wc.status);
  if (severed_.load()) msg += "; the connection was severed (fault injection)";
  return remoteError(msg).blaming(peer_);
}

Status VerbsConnection::pollCompletions(std::vector<uint64_t>* completed) {
  ibv_wc wc[kPollBatch];
  for (uint32_t rail = 0; rail < cqs_.size(); ++rail) {
    for (;;) {
      int n = ibv_poll_cq(cqs_[rail], kPollBatch, wc);
      if (n < 0) return systemError(peerName_ + ": verbs ibv_poll_cq failed");
      for (int i = 0; i < n; ++i) {
        if (wc[i].status != IBV_WC_SUCCESS) {
          BCCL_RETURN_IF_ERROR(onFailedCompletion(wc[i], rail));
          continue;
        }
        Status st = (wc[i].wr_id >> 56) == 0
                        ? onRecvCompletion(static_cast<uint32_t>(wc[i].wr_id), wc[i], completed)
                        : onSendCompletion(wc[i], rail, completed);
        BCCL_RETURN_IF_ERROR(st);
      }
      if (n < kPollBatch) break;
    }
  }
  return Status::ok();
}

Status VerbsConnection::onControlCompletion(const ibv_wc& wc, std::vector<uint64_t>* completed) {
  BCCL_RETURN_IF_ERROR(postRecvEntries(ctrl_, kCtrlQp, 1));
  const uint32_t imm = ntohl(wc.imm_data);
  const uint32_t index = immIndex(imm);
  switch (immKind(imm)) {
    case VerbsImm::kCredit:
      eagerPeerFreed_ = index;
      return Status::ok();
    case VerbsImm::kEager:
      return onEager(index, completed);
    case VerbsImm::kEagerMismatch:
      return invalidUsage(peerName_ + " expects " + std::to_string(index) +
                          " bytes, but this rank sent a message of another size: mismatched "
                          "counts or datatypes between ranks");
    case VerbsImm::kQpNotice:
      return onQpNotice(index);
    default:
      break;
  }
  const uint32_t qi = index >> 16, entry = index & 0xffff;
  if (immKind(imm) != VerbsImm::kGrant || qi >= qps_.size() || entry >= cfg_.grantSlots)
    return internalError(peerName_ + ": verbs: unexpected immediate on the control QP");
  // A grant on a QP the peer has already put back (its Up came before, in order): ours is back
  // too. On a QP still dead here: issued before the peer learnt it had failed, and it grants
  // that chunk again.
  if (revivable(qi)) markRevived(qi);
  if (qps_[qi].dead) return Status::ok();
  // Copied out at once: the FIFO entry may be rewritten once its chunk has landed.
  Qp& q = qps_[qi];
  q.pending.push_back(q.grantIn[entry]);
  q.pendingIndex.push_back(entry);
  return Status::ok();
}

Status VerbsConnection::onRecvCompletion(uint32_t qi, const ibv_wc& wc,
                                         std::vector<uint64_t>* completed) {
  if (!(wc.wc_flags & IBV_WC_WITH_IMM) || (qi >= qps_.size() && qi != kCtrlQp))
    return internalError(peerName_ + ": verbs: unexpected receive completion");
  if (qi == kCtrlQp) return onControlCompletion(wc, completed);
  Qp& q = qps_[qi];
  --q.recvOutstanding;
  // A dead QP's landed chunks are still taken (that is what its recovery waits for).
  if (!q.dead) BCCL_RETURN_IF_ERROR(postRecvEntries(q.qp, qi, 1));
  const uint32_t imm = ntohl(wc.imm_data);
  const uint32_t index = immIndex(imm);
  const uint32_t g = cfg_.grantSlots;
  switch (immKind(imm)) {
    case VerbsImm::kData:
    case VerbsImm::kCancel:
      break;
    default:
      if (index >= g) return internalError(peerName_ + ": verbs: immediate out of range");
      if (immKind(imm) == VerbsImm::kMismatch) {
        const Issued& is = q.issued[index];
        return invalidUsage(
            peerName_ + " sent a message of another size than the " +
            std::to_string(is.op != nullptr ? is.op->bytes : 0) +
            " bytes this rank expects: mismatched counts or datatypes between ranks");
      }
      return internalError(peerName_ + ": verbs: unknown immediate");
  }
  if (index >= g) return internalError(peerName_ + ": verbs: immediate out of range");
  // Chunks (or cancels) come back in the order their grants went out on this QP.
  const uint32_t oldest = (q.grantHead + g - q.grantsOut) % g;
  Issued& is = q.issued[index];
  if (q.grantsOut == 0 || index != oldest || is.op == nullptr)
    return internalError(peerName_ + ": verbs: chunk for grant " + std::to_string(index) +
                         " arrived out of order on QP " + std::to_string(q.qp->qp_num));
  RecvOp& op = *is.op;
  const bool data = immKind(imm) == VerbsImm::kData;
  if (data && op.eagerTaken)
    return internalError(peerName_ + ": verbs: data for a message that came eagerly");
  if (is.slot >= 0) {
    if (data)
      op.target.deliver(is.offset, q.ring + static_cast<size_t>(is.slot) * cfg_.slotBytes,
                        is.bytes);
    --q.ringUsed;
  }
  --q.grantsOut;
  if (data) op.receivedBytes += is.bytes;
  ++op.chunksReceived;
  is = Issued{};
  if (data && op.granted && op.chunksReceived == op.chunksGranted && op.lostChunks == 0) {
    finishRecv(op, completed);
  } else {
    retireRecv(op);
  }
  return Status::ok();
}

Status VerbsConnection::onSendCompletion(const ibv_wc& wc, uint32_t rail,
                                         std::vector<uint64_t>* completed) {
  // Whatever a dead QP still confirms was accounted for when it died (its writes became
  // `lost`, settled by the receiver's grants or its closing notice).
  const int posted = dataQpIndex(rail, wc.qp_num);
  if (posted >= 0) {
    Qp& on = qps_[static_cast<size_t>(posted)];
    --on.sendOutstanding;
    if (on.dead) return Status::ok();
  }
  if (wrKind(wc.wr_id) == kWrQpNotice) return Status::ok();
  const uint32_t qi = wrQp(wc.wr_id);
  if (qi >= qps_.size()) return internalError(peerName_ + ": verbs: unexpected send completion");
  Qp& q = qps_[qi];
  switch (wrKind(wc.wr_id)) {
    case kWrGrant:
      --q.grantOutBusy;
      return Status::ok();
    case kWrMismatch:
    case kWrCancel:
      return Status::ok();
    case kWrCredit:
      creditInFlight_ = false;
      return maybeReturnCredits(false);
    case kWrEager:
      --eagerOutBusy_;
      break;
    case kWrData:
      if (wc.wr_id & kWrBounce) --q.bounceUsed;
      if (!q.flights.empty()) q.flights.pop_front();
      break;
    default:
      break;
  }
  SendOp* op = sendBySeq(wrSeq(wc.wr_id));
  if (op == nullptr || op->inflight == 0)
    return internalError(peerName_ + ": verbs: completion for an unknown send");
  --op->inflight;
  if (op->postedBytes == op->bytes && op->chunksPosted > 0 && op->inflight == 0)
    finishSend(*op, completed);
  return Status::ok();
}

int VerbsConnection::pickQp(bool needSlot) const {
  // The live QP with room and the fewest grants outstanding (ties in turn): a QP that delivers
  // more slowly keeps its grants longer and so is offered fewer chunks, which spreads the
  // traffic in proportion to what each QP delivers. The sender follows whatever QP a grant
  // names, so this is the only place a policy lives.
  const uint32_t n = static_cast<uint32_t>(qps_.size());
  int best = -1;
  for (uint32_t k = 0; k < n; ++k) {
    const uint32_t i = (nextQp_ + k) % n;
    const Qp& q = qps_[i];
    if (q.dead || q.grantsOut >= cfg_.grantSlots || q.grantOutBusy >= cfg_.grantSlots ||
        (needSlot && q.ringUsed >= cfg_.slots))
      continue;
    if (best < 0 || q.grantsOut < qps_[static_cast<size_t>(best)].grantsOut)
      best = static_cast<int>(i);
  }
  return best;
}

Status VerbsConnection::issueGrants() {
  // Chunks whose grants went down with a failed QP go first: theirs are the oldest messages.
  while (!regrants_.empty()) {
    const Regrant r = regrants_.front();
    const bool needSlot = !r.op->direct && r.bytes > 0;
    const int qi = pickQp(needSlot);
    if (qi < 0) return Status::ok();  // out of credits: more when chunks land
    BCCL_RETURN_IF_ERROR(postGrant(*r.op, r.offset, r.bytes, needSlot, static_cast<uint32_t>(qi)));
    regrants_.pop_front();
    --r.op->lostChunks;
    --qps_[r.fromQp].regrantsLeft;
  }
  int64_t now = -1;
  for (RecvOp& op : recvs_) {
    if (op.granted) continue;
    if (op.chunksGranted == 0 && eagerEnabled() && op.bytes <= eagerBytes_) {
      if (now < 0) now = nowNs();
      if (!grantDue(op, now)) continue;  // its eager message is probably on its way
    }
    while (!op.granted) {
      if (op.chunksGranted == 0) {
        op.direct = zeroCopy_ && op.target.operand == nullptr && op.bytes >= cfg_.zeroCopyBytes;
        if (op.direct && op.hold == nullptr) {
          StatusOr<ibv_mr*> mr = ctx_->mrCache().acquire(
              op.target.dst, op.bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
          if (!mr.isOk()) return mr.status();
          op.hold = mr.value();  // once: a retry after running out of credits finds it
        }
      }
      size_t chunk = cfg_.slotBytes;
      if (op.direct) {
        const size_t live = liveQps();
        chunk = (op.bytes + live - 1) / live;
        chunk = (chunk + kDirectChunkAlign - 1) / kDirectChunkAlign * kDirectChunkAlign;
      }
      chunk = std::min(chunk, op.bytes - op.grantedBytes);
      const bool needSlot = !op.direct && chunk > 0;
      const int qi = pickQp(needSlot);
      if (qi < 0) return Status::ok();  // out of credits: more when chunks land
      BCCL_RETURN_IF_ERROR(
          postGrant(op, op.grantedBytes, chunk, needSlot, static_cast<uint32_t>(qi)));
      op.grantedBytes += chunk;
      op.granted = op.grantedBytes == op.bytes;
    }
  }
  return Status::ok();
}

Status VerbsConnection::postGrant(RecvOp& op, uint64_t offset, size_t chunk, bool needSlot,
                                  uint32_t qi) {
  nextQp_ = qi + 1;
  Qp& q = qps_[qi];
  Issued is;
  is.op = &op;
  is.offset = offset;
  is.bytes = chunk;
  VerbsGrant grant;
  grant.seq = op.seq;
  grant.offset = offset;
  grant.bytes = chunk;
  grant.total = op.bytes;
  if (op.direct) {
    grant.addr = reinterpret_cast<uint64_t>(op.target.dst) + offset;
    grant.rkey = op.hold->rkey;
  } else {
    // A 0-byte message still gets a grant (its write-with-immediate is the message).
    grant.addr = reinterpret_cast<uint64_t>(q.ring);
    grant.rkey = q.ringMr->rkey;
    if (needSlot) {
      is.slot = static_cast<int>(q.ringHead);
      grant.addr += static_cast<uint64_t>(q.ringHead) * cfg_.slotBytes;
      q.ringHead = (q.ringHead + 1) % cfg_.slots;
      ++q.ringUsed;
    }
  }
  const uint32_t index = q.grantHead;
  q.grantHead = (q.grantHead + 1) % cfg_.grantSlots;
  ++q.grantsOut;
  q.issued[index] = is;
  // The entry's previous grant has come back as data, so the peer is done reading it.
  q.grantOut[index] = grant;
  ibv_sge sge{reinterpret_cast<uint64_t>(&q.grantOut[index]), sizeof(VerbsGrant),
              q.grantOutMr->lkey};
  ibv_send_wr wr{};
  wr.wr_id = sendWrId(kWrGrant, qi, op.seq);
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_SIGNALED;
  // On the control QP, naming the data QP whose FIFO it lands in (and whose ring it grants).
  wr.imm_data = htonl(makeImm(VerbsImm::kGrant, (qi << 16) | index));
  wr.wr.rdma.remote_addr = remote_.qp[qi].grantAddr + index * sizeof(VerbsGrant);
  wr.wr.rdma.rkey = remote_.qp[qi].grantRkey;
  ibv_send_wr* bad = nullptr;
  int rc = ibv_post_send(ctrl_, &wr, &bad);
  if (rc != 0)
    return systemError(peerName_ + ": verbs cannot post a grant on QP " +
                       std::to_string(ctrl_->qp_num) + ": " + strerror(rc));
  ++q.grantOutBusy;
  ++q.grantsIssued;
  ++op.chunksGranted;
  return Status::ok();
}

VerbsConnection::SendOp* VerbsConnection::sendBySeq(uint32_t seq) {
  if (sends_.empty()) return nullptr;
  const uint32_t i = seq - sends_.front().seq;
  return i < sends_.size() ? &sends_[i] : nullptr;
}

Status VerbsConnection::serveGrants() {
  for (uint32_t qi = 0; qi < qps_.size(); ++qi) {
    Qp& q = qps_[qi];
    while (!q.pending.empty()) {
      bool served = false;
      BCCL_RETURN_IF_ERROR(serveGrant(qi, q.pending.front(), q.pendingIndex.front(), &served));
      if (!served) break;
      q.pending.pop_front();
      q.pendingIndex.pop_front();
    }
  }
  return Status::ok();
}

Status VerbsConnection::serveGrant(uint32_t qi, const VerbsGrant& g, uint32_t index, bool* served) {
  Qp& q = qps_[qi];
  SendOp* op = sendBySeq(g.seq);
  if (op == nullptr && static_cast<int32_t>(g.seq - sendSeq_) >= 0)
    return Status::ok();  // not posted yet: wait for it
  if (op == nullptr || op->eager) {
    // Only a message that went eagerly is granted after it left (a lazy grant that crossed
    // it): give the grant back.
    BCCL_RETURN_IF_ERROR(postCancel(qi, index, g.seq));
    *served = true;
    return Status::ok();
  }
  ibv_send_wr wr{};
  ibv_sge sge{};
  wr.wr.rdma.remote_addr = g.addr;
  wr.wr.rdma.rkey = g.rkey;
  wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  wr.send_flags = IBV_SEND_SIGNALED;
  if (g.total != op->bytes) {
    // Tell the receiver before failing here, so both sides report it instead of one waiting.
    wr.wr_id = sendWrId(kWrMismatch, qi, g.seq);
    wr.imm_data = htonl(makeImm(VerbsImm::kMismatch, index));
    if (postDataWr(qi, &wr).isOk()) waitForNotice();
    return invalidUsage(peerName_ + " expects " + std::to_string(g.total) +
                        " bytes where this rank sends " + std::to_string(op->bytes) +
                        ": mismatched counts or datatypes between ranks");
  }
  if (g.offset + g.bytes > op->bytes || op->postedBytes + g.bytes > op->bytes)
    return internalError(peerName_ + ": verbs: grant out of step with the message");
  bool bounce = false;
  const char* staged = nullptr;
  // A chunk granted again after its QP failed comes from our own copy of it when it had been
  // staged: the caller may have its buffer back already.
  const int lost = lostChunkAt(*op, g.offset);
  const char* src = lost >= 0 && op->lost[static_cast<size_t>(lost)].staged != nullptr
                        ? op->lost[static_cast<size_t>(lost)].staged
                        : op->data + g.offset;
  if (lost < 0 && op->reported && op->holds.empty() && g.bytes > 0)
    return internalError(peerName_ + ": verbs: a grant for a chunk no longer held");
  if (g.bytes > 0) {
    if (zeroCopy_ && op->bytes >= cfg_.zeroCopyBytes) {
      if (op->holds.empty()) {
        StatusOr<ibv_mr*> mr = ctx_->mrCache().acquire(op->data, op->bytes, IBV_ACCESS_LOCAL_WRITE);
        if (!mr.isOk()) return mr.status();
        op->holds.push_back(mr.value());
      }
      sge = ibv_sge{reinterpret_cast<uint64_t>(src), static_cast<uint32_t>(g.bytes),
                    op->holds[0]->lkey};
    } else {
      if (g.bytes > cfg_.slotBytes)
        return internalError(peerName_ + ": verbs: a grant larger than a slot without zero copy");
      if (q.bounceUsed == cfg_.slots) return Status::ok();  // wait for a write to complete
      char* slot = q.bounce + static_cast<size_t>(q.bounceHead) * cfg_.slotBytes;
      copyBulk(slot, src, g.bytes);
      staged = slot;
      sge = ibv_sge{reinterpret_cast<uint64_t>(slot), static_cast<uint32_t>(g.bytes),
                    q.bounceMr->lkey};
      q.bounceHead = (q.bounceHead + 1) % cfg_.slots;
      ++q.bounceUsed;
      bounce = true;
    }
    wr.sg_list = &sge;
    wr.num_sge = 1;
  }
  wr.wr_id = sendWrId(kWrData, qi, g.seq, bounce);
  wr.imm_data = htonl(makeImm(VerbsImm::kData, index));
  BCCL_RETURN_IF_ERROR(postDataWr(qi, &wr));
  op->postedBytes += g.bytes;
  ++op->chunksPosted;
  ++op->inflight;
  q.flights.push_back(Flight{g.seq, g.offset, g.bytes, staged});
  if (lost >= 0) op->lost.erase(op->lost.begin() + lost);
  *served = true;
  // Staged in bounce slots, the whole message no longer needs the caller's buffer: report it
  // done now, not one acknowledgement later (the slots are freed by the completions).
  if (op->holds.empty() && op->postedBytes == op->bytes && !op->reported) {
    op->reported = true;
    early_.push_back(op->token);
  }
  return Status::ok();
}

void VerbsConnection::waitForNotice() {
  const Deadline deadline = Deadline::afterMs(kNoticeWaitMs);
  ibv_wc wc[kPollBatch];
  while (!deadline.expired()) {
    // Other completions are dropped: the connection is failing anyway.
    for (ibv_cq* cq : cqs_) {
      int n = ibv_poll_cq(cq, kPollBatch, wc);
      for (int i = 0; i < n; ++i)
        if ((wc[i].wr_id >> 56) != 0 && wrKind(wc[i].wr_id) == kWrMismatch) return;
      if (n < 0) return;
    }
  }
}

void VerbsConnection::finishSend(SendOp& op, std::vector<uint64_t>* completed) {
  for (ibv_mr* mr : op.holds) ctx_->mrCache().release(mr);
  op.holds.clear();
  op.done = true;
  if (!op.reported) completed->push_back(op.token);
  op.reported = true;
}

void VerbsConnection::finishRecv(RecvOp& op, std::vector<uint64_t>* completed) {
  if (op.hold != nullptr) ctx_->mrCache().release(op.hold);
  op.hold = nullptr;
  if (!op.reported) completed->push_back(op.token);
  op.reported = true;
  retireRecv(op);
}

void VerbsConnection::retireRecv(RecvOp& op) {
  // A receive taken eagerly may still have a grant out, whose cancel is yet to come.
  op.done =
      op.reported && op.granted && op.chunksReceived == op.chunksGranted && op.lostChunks == 0;
}

VerbsConnection::RecvOp* VerbsConnection::recvBySeq(uint32_t seq) {
  if (recvs_.empty()) return nullptr;
  const uint32_t i = seq - recvs_.front().seq;
  return i < recvs_.size() ? &recvs_[i] : nullptr;
}

void VerbsConnection::popDone() {
  while (!sends_.empty() && sends_.front().done) sends_.pop_front();
  while (!recvs_.empty() && recvs_.front().done) recvs_.pop_front();
}

}  // namespace bccl
