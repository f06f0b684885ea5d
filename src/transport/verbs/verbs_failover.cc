// Failover between the data QPs of one VerbsConnection (BCCL_IB_QPS_PER_PEER > 1).
//
// A data QP fails by an unsuccessful completion, a fatal asynchronous event, or by being found
// in the error state (fault injection forces one there). Either side may notice first; it
// moves its end to the error state (nothing more lands through it), tells the other side with a
// Down notice on the control QP, and stops using it:
//  - as a sender, every write on it not yet confirmed becomes a `lost` chunk of its message
//    (with a pointer to its copy in the dead QP's bounce slot, which is never reused), and the
//    grants it had not answered are dropped;
//  - as a receiver (the grantor), once every chunk that did land through it has been taken
//    (all its receive entries completed or flushed, or a short drain time passed), it grants
//    each chunk still unanswered again on a live QP, then sends a Closed notice.
// The control QP delivers in order, so a sender sees the new grants before the Closed notice:
// a lost chunk granted again is written again from its copy; one not granted again had landed
// and counts as written. A chunk therefore lands exactly once, which keeps reductions right.
// Losing the control QP or the last data QP fails the connection as before.
//
// Putting a QP back: once both ends have settled its failure (Closed sent and received) and it
// has no work left (every entry completed or flushed), each end resets it (RESET -> INIT -> RTR
// -> RTS, with packet sequence numbers moved on by its incarnation, so nothing of the old one is
// taken for new) after BCCL_IB_QP_RETRY_MS, doubling with each failure, and sends Up. It is
// used again when both ends are up; if the cause persists it fails again and waits longer.
#include <infiniband/verbs.h>

#include <algorithm>
#include <cstring>

#include "core/deadline.h"
#include "core/logging.h"
#include "transport/verbs/verbs_connection.h"
#include "transport/verbs/verbs_qp.h"

namespace bccl {
namespace {

// After its end is in the error state, a dead QP's receive entries should all come back
// (flushed); a device that does not flush them gets this long for landed chunks to show.
constexpr int64_t kDrainNs = 10 * 1000 * 1000;
// How often idle QPs are checked for having entered the error state unnoticed.
constexpr int64_t kStateCheckNs = 100 * 1000 * 1000;
// The retry delay doubles with each failure of a QP, up to this many times.
constexpr uint32_t kMaxBackoffShift = 4;
// Packet sequence numbers of incarnation k start this far on from the first ones.
constexpr uint32_t kPsnStepPerIncarnation = 0x10000;

uint32_t psnOf(uint32_t first, uint32_t incarnation) {
  return (first + incarnation * kPsnStepPerIncarnation) & 0xFFFFFFu;
}

}  // namespace

uint32_t VerbsConnection::liveQps() const {
  uint32_t n = 0;
  for (const Qp& q : qps_) n += q.dead ? 0 : 1;
  return n;
}

int VerbsConnection::dataQpIndex(uint32_t rail, uint32_t qpNum) const {
  for (size_t i = 0; i < qps_.size(); ++i)
    if (qps_[i].qp != nullptr && qps_[i].rail == rail && qps_[i].qp->qp_num == qpNum)
      return static_cast<int>(i);
  return -1;
}

int VerbsConnection::lostChunkAt(const SendOp& op, uint64_t offset) {
  for (size_t i = 0; i < op.lost.size(); ++i)
    if (op.lost[i].offset == offset) return static_cast<int>(i);
  return -1;
}

bool VerbsConnection::failOnePath() {
  // Another thread: only the QP pointers (fixed after create) and the atomics are touched.
  const uint32_t n = static_cast<uint32_t>(qps_.size());
  const uint32_t dead = deadMask_.load();
  uint32_t live = 0;
  int victim = -1;
  for (uint32_t i = 0; i < n; ++i)
    if ((dead & (1u << i)) == 0) {
      ++live;
      victim = static_cast<int>(i);
    }
  if (live < 2 || !connected_) return false;
  BCCL_WARN("fault injection: forcing verbs QP %u to %s into the error state",
            qps_[static_cast<size_t>(victim)].qp->qp_num, peerName_.c_str());
  errorRcQp(qps_[static_cast<size_t>(victim)].qp);
  suspectQps_.fetch_or(1u << victim);
  return true;
}

Status VerbsConnection::onFailedCompletion(const ibv_wc& wc, uint32_t rail) {
  const int qi = dataQpIndex(rail, wc.qp_num);
  // The control QP carries every grant and notice: without it the connection cannot go on.
  if (qi < 0 || severed_.load()) return completionError(wc, rail);
  Qp& q = qps_[static_cast<size_t>(qi)];
  if ((wc.wr_id >> 56) == 0) {
    --q.recvOutstanding;
  } else {
    --q.sendOutstanding;
  }
  if (q.dead) return Status::ok();  // the flush of a QP already cut out
  return retireQp(static_cast<uint32_t>(qi), completionError(wc, rail).message(), false);
}

Status VerbsConnection::retireQp(uint32_t qi, const std::string& why, bool fromPeer) {
  Qp& q = qps_[qi];
  if (q.dead) return Status::ok();
  if (liveQps() <= 1)
    return remoteError(peerName_ + ": verbs: the last data QP failed: " + why).blaming(peer_);
  q.dead = true;
  q.deadNs = nowNs();
  q.retryNs = q.deadNs + retryDelayNs(q.failures++);
  deadMask_.fetch_or(1u << qi);
  errorRcQp(q.qp);
  BCCL_WARN("%s: verbs QP %u (%s) cut out: %s; its traffic moves to the other %u QP(s)",
            peerName_.c_str(), q.qp->qp_num, ctx_->port(q.rail).device.c_str(), why.c_str(),
            liveQps());
  if (!fromPeer) BCCL_RETURN_IF_ERROR(postQpNotice(kQpDown, qi));
  // Sender side: what it did not confirm may or may not have landed; the receiver decides.
  for (const Flight& f : q.flights) {
    SendOp* op = sendBySeq(f.seq);
    if (op == nullptr) continue;
    op->postedBytes -= f.bytes;
    --op->chunksPosted;
    --op->inflight;
    op->lost.push_back(SendOp::Lost{f.offset, f.bytes, f.staged, qi});
  }
  q.flights.clear();
  q.pending.clear();
  q.pendingIndex.clear();
  return Status::ok();
}

Status VerbsConnection::checkSuspectQps() {
  for (const auto& [qi, event] : asyncDeadQps_)
    BCCL_RETURN_IF_ERROR(retireQp(qi, "asynchronous event " + event, false));
  asyncDeadQps_.clear();
  // QPs on a secondary device whose port went down.
  for (uint32_t qi = 0; ctx_->rails() > 1 && qi < qps_.size(); ++qi)
    if (!qps_[qi].dead && ctx_->railDown(qps_[qi].rail))
      BCCL_RETURN_IF_ERROR(
          retireQp(qi, "the port of " + ctx_->port(qps_[qi].rail).device + " went down", false));
  // Read before the exchange: an atomic read-modify-write on every progress call is not free.
  uint32_t suspects =
      suspectQps_.load(std::memory_order_relaxed) != 0 ? suspectQps_.exchange(0) : 0;
  // Now and then every live QP: a QP can enter the error state with no work on it to report.
  const int64_t now = nowNs();
  if (now - lastStateCheckNs_ >= kStateCheckNs) {
    lastStateCheckNs_ = now;
    suspects |= (1u << qps_.size()) - 1;
  }
  for (uint32_t qi = 0; qi < qps_.size(); ++qi) {
    if ((suspects & (1u << qi)) == 0 || qps_[qi].dead) continue;
    ibv_qp_attr attr{};
    ibv_qp_init_attr init{};
    if (ibv_query_qp(qps_[qi].qp, &attr, IBV_QP_STATE, &init) == 0 && attr.qp_state == IBV_QPS_ERR)
      BCCL_RETURN_IF_ERROR(retireQp(qi, "found in the error state", false));
  }
  return Status::ok();
}

Status VerbsConnection::recoverDeadQps() {
  const uint32_t g = cfg_.grantSlots;
  const int64_t now = nowNs();
  for (uint32_t qi = 0; qi < qps_.size(); ++qi) {
    Qp& q = qps_[qi];
    if (!q.dead || q.recovered) continue;
    if (q.recvOutstanding > 0 && now - q.deadNs < kDrainNs) continue;
    // Unanswered grants, oldest first, are granted again elsewhere (issueGrants, first thing).
    for (uint32_t k = 0; k < q.grantsOut; ++k) {
      Issued& is = q.issued[(q.grantHead + g - q.grantsOut + k) % g];
      if (is.op != nullptr) {
        --is.op->chunksGranted;
        ++is.op->lostChunks;
        regrants_.push_back(Regrant{is.op, is.offset, is.bytes, qi});
        ++q.regrantsLeft;
      }
      is = Issued{};
    }
    q.grantsOut = 0;
    q.ringUsed = 0;
    q.recovered = true;
  }
  return Status::ok();
}

Status VerbsConnection::closeRecoveredQps() {
  for (uint32_t qi = 0; qi < qps_.size(); ++qi) {
    Qp& q = qps_[qi];
    if (!q.recovered || q.closedSent || q.regrantsLeft > 0) continue;
    BCCL_RETURN_IF_ERROR(postQpNotice(kQpClosed, qi));
    q.closedSent = true;
  }
  return Status::ok();
}

Status VerbsConnection::onQpNotice(uint32_t index) {
  const uint32_t qi = index & 0xff, kind = (index >> 8) & 0xf, incarnation = index >> 12;
  if (qi >= qps_.size() || kind < kQpDown || kind > kQpUp)
    return internalError(peerName_ + ": verbs: malformed QP notice");
  Qp& q = qps_[qi];
  switch (kind) {
    case kQpDown:
      // Our end may still be out when the peer's comes back and fails again (its Up and then
      // this Down, in order): put ours back first, so this failure is settled like any other.
      // Ignored, it would leave our end granting on a QP the peer no longer serves.
      if (revivable(qi)) markRevived(qi);
      return retireQp(qi, "its other end failed on " + peerName_, true);
    case kQpClosed:
      onQpClosed(qi);
      q.peerClosed = true;
      return Status::ok();
    default:
      q.peerUp = incarnation;
      return Status::ok();
  }
}

Status VerbsConnection::reviveDeadQps() {
  if (cfg_.qpRetryMs == 0) return Status::ok();
  const int64_t now = nowNs();
  for (uint32_t qi = 0; qi < qps_.size(); ++qi) {
    Qp& q = qps_[qi];
    if (!q.dead) continue;
    if (!q.reset) {
      if (!q.closedSent || !q.peerClosed || q.recvOutstanding > 0 || q.sendOutstanding > 0 ||
          now < q.retryNs || ctx_->railDown(q.rail))
        continue;
      const uint32_t next = q.incarnation + 1;
      VerbsQpBlob remoteQp = remote_.qp[qi];
      remoteQp.psn = psnOf(remoteQp.psn, next);
      const VerbsPort& port = ctx_->port(q.rail);
      Status st = resetRcQp(q.qp, port, peerName_);
      if (st.isOk()) st = connectRcQp(q.qp, port, psnOf(q.psn, next), remoteQp, peerName_);
      if (!st.isOk()) {
        // Not this time: back to the error state, and try again later.
        errorRcQp(q.qp);
        q.retryNs = now + retryDelayNs(q.failures++);
        BCCL_WARN("%s: verbs QP %u cannot be put back yet: %s", peerName_.c_str(), q.qp->qp_num,
                  st.message().c_str());
        continue;
      }
      q.incarnation = next;
      q.reset = true;
      q.bounceUsed = 0;
      BCCL_RETURN_IF_ERROR(postRecvEntries(q.qp, qi, dataRecvWr_));
      BCCL_RETURN_IF_ERROR(postQpNotice(kQpUp, qi));
    }
    if (revivable(qi)) markRevived(qi);
  }
  return Status::ok();
}

int64_t VerbsConnection::retryDelayNs(uint32_t failures) const {
  return static_cast<int64_t>(cfg_.qpRetryMs) * 1000000 << std::min(failures, kMaxBackoffShift);
}

bool VerbsConnection::revivable(uint32_t qi) const {
  const Qp& q = qps_[qi];
  return q.dead && q.reset && q.peerUp == q.incarnation;
}

void VerbsConnection::markRevived(uint32_t qi) {
  Qp& q = qps_[qi];
  q.dead = q.recovered = q.closedSent = q.peerClosed = q.reset = false;
  deadMask_.fetch_and(~(1u << qi));
  BCCL_WARN("%s: verbs QP %u (%s) is back in use after a reset (%u QP(s) live)", peerName_.c_str(),
            q.qp->qp_num, ctx_->port(q.rail).device.c_str(), liveQps());
}

void VerbsConnection::onQpClosed(uint32_t qi) {
  // Every chunk of QP `qi` the receiver wants again has been granted by now (its grants came
  // before this notice on the control QP): the other lost chunks of qi had landed.
  auto grantedAgain = [&](uint32_t seq, uint64_t offset) {
    for (const Qp& q : qps_)
      for (const VerbsGrant& g : q.pending)
        if (g.seq == seq && g.offset == offset) return true;
    return false;
  };
  for (SendOp& op : sends_) {
    for (size_t i = 0; i < op.lost.size();) {
      const SendOp::Lost& l = op.lost[i];
      if (l.qp != qi || grantedAgain(op.seq, l.offset)) {
        ++i;
        continue;
      }
      op.postedBytes += l.bytes;
      ++op.chunksPosted;
      op.lost.erase(op.lost.begin() + static_cast<std::ptrdiff_t>(i));
    }
    if (op.done || op.postedBytes != op.bytes || op.chunksPosted == 0) continue;
    if (op.inflight == 0) {
      finishSend(op, &early_);
    } else if (op.holds.empty() && !op.reported) {
      op.reported = true;
      early_.push_back(op.token);
    }
  }
}

Status VerbsConnection::postQpNotice(uint32_t kind, uint32_t qi) {
  // A zero-length write: only the immediate travels. The address just has to be a valid one.
  return postCtrlImm(sendWrId(kWrQpNotice, 0, 0),
                     makeImm(VerbsImm::kQpNotice, qpNoticeIndex(kind, qi, qps_[qi].incarnation)),
                     remote_.qp[0].grantAddr, remote_.qp[0].grantRkey);
}

Status VerbsConnection::postDataWr(uint32_t qi, ibv_send_wr* wr) {
  Qp& q = qps_[qi];
  ibv_send_wr* bad = nullptr;
  int rc = ibv_post_send(q.qp, wr, &bad);
  if (rc != 0)
    return systemError(peerName_ + ": verbs cannot post a write on QP " +
                       std::to_string(q.qp->qp_num) + ": " + strerror(rc));
  ++q.sendOutstanding;  // counted to its completion: a QP is reset only when none is left
  return Status::ok();
}

}  // namespace bccl
