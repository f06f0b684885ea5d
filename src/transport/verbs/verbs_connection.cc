// VerbsConnection: resources, bring-up, the Connection entry points, waiting and failure. The
// grant protocol itself is in verbs_protocol.cc.
#include "transport/verbs/verbs_connection.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/deadline.h"
#include "core/logging.h"
#include "transport/verbs/verbs_qp.h"
#include "transport/wait_set.h"

namespace bccl {
namespace {

constexpr size_t kBufferAlign = 4096;
// Spare entries on each queue beyond what the credits can fill (see the header).
constexpr uint32_t kSpareWr = 4;
// How long closing waits for sends already reported done to leave.
constexpr int kDrainOnCloseMs = 2000;

char* allocBuffer(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, kBufferAlign, bytes) != 0) return nullptr;
  memset(p, 0, bytes);
  return static_cast<char*>(p);
}

}  // namespace

VerbsConnection::VerbsConnection(VerbsContext* ctx, int peer, std::string peerName)
    : ctx_(ctx), cfg_(ctx->config()), peer_(peer), peerName_(std::move(peerName)) {}

StatusOr<std::unique_ptr<VerbsConnection>> VerbsConnection::create(VerbsContext* ctx, int peer,
                                                                   std::string peerName) {
  std::unique_ptr<VerbsConnection> c(new VerbsConnection(ctx, peer, std::move(peerName)));
  Status st = c->allocate();
  if (!st.isOk()) return st.withContext("verbs connection to " + c->peerName_);
  return c;
}

Status VerbsConnection::allocate() {
  const uint32_t g = cfg_.grantSlots;
  // Per QP: our grant writes (<= g in flight), our answers (data or cancel) to the peer's grants
  // (<= g), eager writes (<= eager slots) and one credit return; incoming write-with-immediates
  // are the same from the peer's side.
  const uint32_t perQp = 2 * g + cfg_.eagerSlots + 1 + kSpareWr;
  const VerbsQpCaps caps{perQp, perQp};
  dataRecvWr_ = caps.recvWr;
  // The control QP carries every data QP's grants (<= g each), one credit return, the eager
  // writes, an eager size-mismatch notice and two failover notices per data QP.
  const uint32_t perCtrl = cfg_.qps * g + cfg_.eagerSlots + 2 * cfg_.qps + 2 + kSpareWr;
  const VerbsQpCaps ctrlCaps{perCtrl, perCtrl};
  const int cqe = static_cast<int>(cfg_.qps * (caps.sendWr + caps.recvWr) + 2 * perCtrl);
  const uint32_t rails = ctx_->rails();
  for (uint32_t r = 0; r < rails; ++r) {
    ibv_cq* cq = ibv_create_cq(ctx_->device(r), cqe, this, ctx_->channel(r), 0);
    if (cq == nullptr)
      return systemError("ibv_create_cq(" + std::to_string(cqe) + ") on " + ctx_->port(r).device +
                         ": " + strerror(errno));
    cqs_.push_back(cq);
  }
  const size_t ringBytes = static_cast<size_t>(cfg_.slots) * cfg_.slotBytes;
  const size_t grantBytes = static_cast<size_t>(g) * sizeof(VerbsGrant);
  const int remote = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
  qps_.resize(cfg_.qps);
  local_.qps = cfg_.qps;
  local_.slots = cfg_.slots;
  local_.slotBytes = cfg_.slotBytes;
  local_.grantSlots = g;
  local_.rails = rails;
  local_.flags = cfg_.zeroCopy ? kVerbsZeroCopy : 0;
  if (cfg_.eagerSlots > 0) {
    eagerBytes_ = cfg_.eagerBytes;
    eagerStride_ = (kVerbsEagerHeader + eagerBytes_ + 63) / 64 * 64;
    const size_t bytes = eagerStride_ * cfg_.eagerSlots;
    eagerIn_ = allocBuffer(bytes);
    eagerOut_ = allocBuffer(bytes);
    if (eagerIn_ == nullptr || eagerOut_ == nullptr)
      return systemError("cannot allocate " + std::to_string(2 * bytes) + " bytes of eager rings");
    eagerInMr_ = ibv_reg_mr(ctx_->pd(), eagerIn_, bytes, remote);
    eagerOutMr_ = ibv_reg_mr(ctx_->pd(), eagerOut_, bytes, IBV_ACCESS_LOCAL_WRITE);
    if (eagerInMr_ == nullptr || eagerOutMr_ == nullptr)
      return systemError("ibv_reg_mr of the eager rings on " + ctx_->port().device + ": " +
                         strerror(errno));
    local_.eagerSlots = cfg_.eagerSlots;
    local_.eagerBytes = cfg_.eagerBytes;
    local_.eagerRkey = eagerInMr_->rkey;
    local_.eagerAddr = reinterpret_cast<uint64_t>(eagerIn_);
  }
  for (uint32_t i = 0; i < cfg_.qps; ++i) {
    Qp& q = qps_[i];
    q.rail = i % rails;
    q.ring = allocBuffer(ringBytes);
    q.bounce = allocBuffer(ringBytes);
    q.grantIn = reinterpret_cast<VerbsGrant*>(allocBuffer(grantBytes));
    q.grantOut = reinterpret_cast<VerbsGrant*>(allocBuffer(grantBytes));
    if (q.ring == nullptr || q.bounce == nullptr || q.grantIn == nullptr || q.grantOut == nullptr)
      return systemError("cannot allocate " + std::to_string(2 * ringBytes) + " bytes of buffers");
    // Data moves on the QP's own device; grants on the control QP's (the primary).
    q.ringMr = ibv_reg_mr(ctx_->pd(q.rail), q.ring, ringBytes, remote);
    q.bounceMr = ibv_reg_mr(ctx_->pd(q.rail), q.bounce, ringBytes, IBV_ACCESS_LOCAL_WRITE);
    q.grantInMr = ibv_reg_mr(ctx_->pd(), q.grantIn, grantBytes, remote);
    q.grantOutMr = ibv_reg_mr(ctx_->pd(), q.grantOut, grantBytes, IBV_ACCESS_LOCAL_WRITE);
    if (q.ringMr == nullptr || q.bounceMr == nullptr || q.grantInMr == nullptr ||
        q.grantOutMr == nullptr)
      return systemError("ibv_reg_mr of the rings on " + ctx_->port().device + ": " +
                         strerror(errno) + " (is 'ulimit -l' large enough?)");
    q.issued.resize(g);
    StatusOr<ibv_qp*> qp = createRcQp(ctx_->port(q.rail), ctx_->pd(q.rail), cqs_[q.rail], caps);
    if (!qp.isOk()) return qp.status();
    q.qp = qp.value();
    ctx_->watch(q.rail, q.qp->qp_num, this);
    q.psn = randomPsn();
    BCCL_RETURN_IF_ERROR(postRecvEntries(q.qp, i, caps.recvWr));
    VerbsQpBlob& b = local_.qp[i];
    b.addr = addressOf(ctx_->port(q.rail));
    b.qpn = q.qp->qp_num;
    b.psn = q.psn;
    b.ringAddr = reinterpret_cast<uint64_t>(q.ring);
    b.ringRkey = q.ringMr->rkey;
    b.grantRkey = q.grantInMr->rkey;
    b.grantAddr = reinterpret_cast<uint64_t>(q.grantIn);
  }
  StatusOr<ibv_qp*> ctrl = createRcQp(ctx_->port(), ctx_->pd(), cqs_[0], ctrlCaps);
  if (!ctrl.isOk()) return ctrl.status();
  ctrl_ = ctrl.value();
  ctx_->watch(0, ctrl_->qp_num, this);
  ctrlPsn_ = randomPsn();
  BCCL_RETURN_IF_ERROR(postRecvEntries(ctrl_, kCtrlQp, ctrlCaps.recvWr));
  local_.ctrl.addr = addressOf(ctx_->port());
  local_.ctrl.qpn = ctrl_->qp_num;
  local_.ctrl.psn = ctrlPsn_;
  return Status::ok();
}

Status VerbsConnection::connect(const VerbsBlob& remote) {
  auto differs = [&](const char* what, uint32_t mine, uint32_t theirs) {
    return invalidArgument("verbs: " + std::string(what) + " is " + std::to_string(mine) +
                           " here but " + std::to_string(theirs) + " on " + peerName_ +
                           ": set it alike on every rank");
  };
  if (remote.magic != kVerbsBlobMagic)
    return internalError("verbs: malformed connection data from " + peerName_);
  if (remote.qps != local_.qps) return differs("BCCL_IB_QPS_PER_PEER", local_.qps, remote.qps);
  if (remote.rails != local_.rails)
    return differs("the number of usable devices in BCCL_IB_HCA", local_.rails, remote.rails);
  if (remote.slots != local_.slots) return differs("BCCL_IB_SLOTS", local_.slots, remote.slots);
  if (remote.slotBytes != local_.slotBytes)
    return differs("BCCL_IB_SLOT_BYTES", local_.slotBytes, remote.slotBytes);
  if (remote.grantSlots != local_.grantSlots)
    return differs("verbs grant slots", local_.grantSlots, remote.grantSlots);
  if (remote.eagerSlots != local_.eagerSlots)
    return differs("BCCL_IB_EAGER_SLOTS", local_.eagerSlots, remote.eagerSlots);
  if (remote.eagerBytes != local_.eagerBytes)
    return differs("BCCL_IB_EAGER_BYTES", local_.eagerBytes, remote.eagerBytes);
  for (uint32_t i = 0; i < cfg_.qps; ++i) {
    BCCL_RETURN_IF_ERROR(
        connectRcQp(qps_[i].qp, ctx_->port(qps_[i].rail), qps_[i].psn, remote.qp[i], peerName_));
  }
  BCCL_RETURN_IF_ERROR(connectRcQp(ctrl_, ctx_->port(), ctrlPsn_, remote.ctrl, peerName_));
  remote_ = remote;
  zeroCopy_ = cfg_.zeroCopy && (remote.flags & kVerbsZeroCopy) != 0;
  eagerSlots_ = local_.eagerSlots;
  connected_ = true;
  BCCL_INFO("verbs: connected to %s: %s", peerName_.c_str(), describe().c_str());
  return Status::ok();
}

VerbsConnection::~VerbsConnection() {
  // Sends already reported done may still sit in the send queue (staged in bounce slots);
  // destroying the QP would discard them, so let them leave first (bounded: a dead peer fails
  // them within the retry timeout, and the wait gives up anyway).
  const Deadline deadline = Deadline::afterMs(kDrainOnCloseMs);
  std::vector<uint64_t> ignored;
  while (!broken_ && connected_ && !sends_.empty() && !deadline.expired()) {
    if (!pollCompletions(&ignored).isOk()) break;
    popDone();
  }
  for (RecvOp& op : recvs_)
    if (op.hold != nullptr) ctx_->mrCache().release(op.hold);
  for (SendOp& op : sends_)
    for (ibv_mr* mr : op.holds) ctx_->mrCache().release(mr);
  if (ctrl_ != nullptr) {
    ctx_->unwatch(0, ctrl_->qp_num);
    ibv_destroy_qp(ctrl_);
  }
  for (Qp& q : qps_) {
    if (q.qp != nullptr) {
      ctx_->unwatch(q.rail, q.qp->qp_num);
      ibv_destroy_qp(q.qp);
    }
    for (ibv_mr* mr : {q.ringMr, q.bounceMr, q.grantInMr, q.grantOutMr})
      if (mr != nullptr) ibv_dereg_mr(mr);
    free(q.ring);
    free(q.bounce);
    free(q.grantIn);
    free(q.grantOut);
  }
  for (ibv_mr* mr : {eagerInMr_, eagerOutMr_})
    if (mr != nullptr) ibv_dereg_mr(mr);
  free(eagerIn_);
  free(eagerOut_);
  ctx_->drainCompletionEvents();
  for (ibv_cq* cq : cqs_) ibv_destroy_cq(cq);
}

std::string VerbsConnection::describe() const {
  return "verbs " + ctx_->describePorts() + ", " + std::to_string(cfg_.qps) + " QP(s)" +
         (eagerEnabled() ? ", eager up to " + std::to_string(eagerBytes_) + " B" : "") +
         (zeroCopy_ ? ", zero-copy" : "");
}

Status VerbsConnection::postRecvEntries(ibv_qp* qp, uint32_t qi, uint32_t count) {
  for (uint32_t i = 0; i < count; ++i) {
    // No scatter entry: RDMA WRITE WITH IMM consumes a receive only for its immediate.
    ibv_recv_wr wr{};
    wr.wr_id = qi;
    ibv_recv_wr* bad = nullptr;
    int rc = ibv_post_recv(qp, &wr, &bad);
    if (rc != 0)
      return systemError(peerName_ + ": verbs cannot post a receive on QP " +
                         std::to_string(qp->qp_num) + ": " + strerror(rc));
    if (qi < qps_.size()) ++qps_[qi].recvOutstanding;
  }
  return Status::ok();
}

bool VerbsConnection::hasPending() const {
  if (!sends_.empty() || !recvs_.empty() || !regrants_.empty()) return true;
  for (const Qp& q : qps_)
    if (!q.pending.empty() || (q.dead && !q.closedSent)) return true;
  return false;
}

Status VerbsConnection::usable() const {
  if (broken_) return brokenStatus_;
  if (!connected_) return internalError("verbs connection to " + peerName_ + " is not connected");
  return Status::ok();
}

Status VerbsConnection::fail(Status st) {
  if (broken_) return brokenStatus_;
  broken_ = true;
  brokenStatus_ = st;
  // The peer learns at once (its writes and grants fail) instead of waiting on a silent QP.
  for (Qp& q : qps_)
    if (q.qp != nullptr) errorRcQp(q.qp);
  if (ctrl_ != nullptr) errorRcQp(ctrl_);
  return st;
}

Status VerbsConnection::postSend(const void* data, size_t bytes, uint64_t token) {
  BCCL_RETURN_IF_ERROR(usable());
  SendOp op;
  op.data = static_cast<const char*>(data);
  op.bytes = bytes;
  op.token = token;
  op.seq = sendSeq_++;
  sends_.push_back(std::move(op));
  // Small: straight into an eager slot if we hold a credit. Else grants for it may be here
  // already: answer them now rather than at the next progress().
  Status st = trySendEager(sends_.back());
  if (st.isOk()) st = serveGrants();
  return st.isOk() ? st : fail(st);
}

Status VerbsConnection::postRecv(const RecvTarget& target, size_t bytes, uint64_t token) {
  BCCL_RETURN_IF_ERROR(usable());
  RecvOp op;
  op.target = target;
  op.bytes = bytes;
  op.token = token;
  op.seq = recvSeq_++;
  if (eagerEnabled() && bytes <= eagerBytes_) op.postedNs = nowNs();
  recvs_.push_back(op);
  Status st;
  // Its message may have come eagerly already.
  if (!unexpected_.empty() && unexpected_.front().first == op.seq) {
    const uint32_t slot = unexpected_.front().second;
    unexpected_.pop_front();
    st = takeEager(recvs_.back(), slot, &early_);
  }
  // Granting at once is what lets the sender write the moment its data is ready.
  if (st.isOk()) st = issueGrants();
  return st.isOk() ? st : fail(st);
}

Status VerbsConnection::progress(std::vector<uint64_t>* completed) {
  BCCL_RETURN_IF_ERROR(usable());
  if (severed_.load())
    return fail(
        remoteError(peerName_ + ": verbs connection severed (fault injection)").blaming(peer_));
  Status st = ctx_->pollAsync();
  if (!st.isOk()) return fail(st.withContext(peerName_));
  if (!asyncFailure_.empty()) return fail(remoteError(asyncFailure_).blaming(peer_));
  st = pollCompletions(completed);
  if (st.isOk()) st = checkSuspectQps();
  // The rest of failover has nothing to do while every QP is live (the usual case).
  const bool anyDead = deadMask_.load(std::memory_order_relaxed) != 0;
  if (st.isOk() && anyDead) st = recoverDeadQps();
  if (st.isOk()) st = issueGrants();
  if (st.isOk() && anyDead) st = closeRecoveredQps();
  if (st.isOk() && anyDead) st = reviveDeadQps();
  if (st.isOk()) st = serveGrants();
  // Credits in batches, but at once when a small receive waits long enough to be granted:
  // its sender may be the one out of credits.
  if (st.isOk() && eagerEnabled()) {
    bool starving = false;
    for (const RecvOp& op : recvs_)
      if (!op.reported && op.bytes <= eagerBytes_ && op.chunksGranted > 0) starving = true;
    st = maybeReturnCredits(starving);
  }
  if (!st.isOk()) return fail(st);
  completed->insert(completed->end(), early_.begin(), early_.end());
  early_.clear();
  popDone();
  return Status::ok();
}

void VerbsConnection::addToWaitSet(WaitSet* set) const {
  // Arm, then the executor re-checks before sleeping: a completion that arrived before the
  // arming is found by that re-check, one after it makes the channel fd readable.
  ctx_->drainCompletionEvents();
  for (ibv_cq* cq : cqs_) ibv_req_notify_cq(cq, 0);
  ctx_->addToWaitSet(set);
}

void VerbsConnection::onAsyncEvent(uint32_t rail, uint32_t qpn, const char* event) {
  // A data QP's event is a failover (checkSuspectQps), if another QP is left to take over.
  const int qi = dataQpIndex(rail, qpn);
  if (qi >= 0) {
    asyncDeadQps_.emplace_back(static_cast<uint32_t>(qi), event);
    return;
  }
  if (asyncFailure_.empty())
    asyncFailure_ = peerName_ + ": verbs QP " + std::to_string(qpn) + " on " +
                    ctx_->port(rail).device + ": asynchronous event " + event;
}

void VerbsConnection::sever() {
  severed_.store(true);
  // Verbs calls are thread-safe: the executor's thread sees flushed completions next.
  for (Qp& q : qps_)
    if (q.qp != nullptr) errorRcQp(q.qp);
  if (ctrl_ != nullptr) errorRcQp(ctrl_);
}

void VerbsConnection::dropPending() {
  // The error state stops the device from touching user memory named by outstanding work
  // (zero-copy grants, sends from user buffers) after the caller takes it back.
  if (!broken_) {
    std::string why = peerName_ + ": verbs connection abandoned after an earlier failure";
    if (failureCause_ >= 0) why += " (of rank " + std::to_string(failureCause_) + ")";
    fail(remoteError(why));
  }
  for (RecvOp& op : recvs_)
    if (op.hold != nullptr) ctx_->mrCache().release(op.hold);
  for (SendOp& op : sends_)
    for (ibv_mr* mr : op.holds) ctx_->mrCache().release(mr);
  for (Qp& q : qps_) {
    for (Issued& is : q.issued) is = Issued{};
    q.pending.clear();
    q.pendingIndex.clear();
    q.flights.clear();
  }
  regrants_.clear();
  unexpected_.clear();
  recvs_.clear();
  sends_.clear();
  early_.clear();
}

}  // namespace bccl
