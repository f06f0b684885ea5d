// UCX data path. Requests are polled (no completion callbacks), so a Connection that goes away
// leaves no callback pointing at it: whatever UCX may still touch lives in UcxLinkState.
#include "transport/ucx/ucx_connection.h"

#include <algorithm>
#include <chrono>

#include "core/logging.h"
#include "transport/wait_set.h"

namespace bccl {
namespace {

// Tag layout: control bit | sender rank (19) | sequence (32) | piece index (11) | last piece.
constexpr int kRankShift = 44;
constexpr int kSeqShift = 12;
constexpr int kPieceShift = 1;
constexpr uint64_t kLastBit = 1;
// The last-piece flag is not matched but checked: a sender with more pieces than the receiver
// expects then shows up as a mismatch instead of a hang.
constexpr uint64_t kDataMask = ~kLastBit;
constexpr uint64_t kFullMask = ~0ull;

constexpr uint32_t kMaxPieces = 2048;
// Large enough that UCX's per-message cost (a rendezvous handshake) stays a few percent of the
// transfer, small enough that reduction overlaps it.
constexpr size_t kPieceBytes = 1 << 20;
constexpr int kStagingSlots = 4;
constexpr int kProgressBurst = 64;
constexpr int kSettleTimeoutMs = 200;
constexpr int kCloseTimeoutMs = 1000;

uint64_t dataTag(int rank, uint32_t seq, uint32_t index, bool last) {
  return (static_cast<uint64_t>(rank) << kRankShift) | (static_cast<uint64_t>(seq) << kSeqShift) |
         (static_cast<uint64_t>(index) << kPieceShift) | (last ? kLastBit : 0);
}

uint64_t goodbyeTag(int rank) {
  return kUcxControlBit | (static_cast<uint64_t>(rank) << kRankShift);
}

// Both sides derive the piece size from the message size alone, so they agree on the split.
size_t pieceBytesFor(size_t bytes) {
  const size_t need = (bytes + kMaxPieces - 1) / kMaxPieces;
  return need <= kPieceBytes ? kPieceBytes : (need + 4095) / 4096 * 4096;
}

uint32_t piecesFor(size_t bytes, size_t pieceBytes) {
  return bytes == 0 ? 1 : static_cast<uint32_t>((bytes + pieceBytes - 1) / pieceBytes);
}

bool afterDeadline(std::chrono::steady_clock::time_point deadline) {
  return std::chrono::steady_clock::now() >= deadline;
}

std::chrono::steady_clock::time_point deadlineIn(int ms) {
  return std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
}

// A stand-in address for zero-byte messages, whose buffers may be null.
char zeroByteBuffer[1];

}  // namespace

UcxConnection::Op::Op(uint64_t token_, bool send_, const RecvTarget& target_, size_t bytes_,
                      uint32_t seq_)
    : token(token_),
      send(send_),
      target(target_),
      bytes(bytes_),
      seq(seq_),
      pieceBytes(pieceBytesFor(bytes_)),
      pieces(piecesFor(bytes_, pieceBytes)) {}

void ucxEndpointFailed(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  auto* link = static_cast<UcxLinkState*>(arg);
  if (link->failed) return;
  link->failed = true;
  link->failure = status;
}

UcxConnection::UcxConnection(UcxEndpointFactory* factory, UcxLinkState* link, ucp_ep_h ep,
                             bool peerMode, int myRank, int peer, std::string peerName)
    : factory_(factory),
      worker_(factory->worker()),
      link_(link),
      ep_(ep),
      myRank_(myRank),
      peer_(peer),
      peerName_(std::move(peerName)),
      peerMode_(peerMode) {
  link_->staging.resize(kStagingSlots);
  for (int s = kStagingSlots - 1; s >= 0; --s) freeSlots_.push_back(s);
  postGoodbyeRecv();
}

UcxConnection::~UcxConnection() {
  const bool recvsSettled = settle(kSettleTimeoutMs);
  checkGoodbye();
  bool sendsDone = !sendsAbandoned_;
  for (const Op& op : ops_) sendsDone = sendsDone && (!op.send || op.donePieces == op.pieces);
  const bool linkUp = ep_ != nullptr && !link_->failed && !severed_ && !severRequested_.load();
  if (linkUp) {
    // Tells the peer which of its operations can never complete, so they fail at once naming
    // this rank instead of waiting for a timeout, and lets a peer that is closing too skip
    // waiting for its flush. Sent even when the peer closed first, for that second reason.
    link_->goodbyeOut.sent = firstUnfinished(true);
    link_->goodbyeOut.received = firstUnfinished(false);
    ucp_request_param_t param{};
    ucs_status_ptr_t r = ucp_tag_send_nbx(ep_, &link_->goodbyeOut, sizeof(link_->goodbyeOut),
                                          goodbyeTag(myRank_), &param);
    if (r != nullptr && !UCS_PTR_IS_ERR(r)) ucp_request_free(r);
  }
  // Flushed before it is closed: an eager send completes locally before the peer has the
  // data, and a forced close would throw away what is still on its way. After a failure that
  // no longer matters, and with PEER error handling a forced close is quicker.
  if (ep_ != nullptr && sendsDone &&
      (peerMode_ ? linkUp && !peerClosed_ && !broken_ : recvsSettled)) {
    factory_->retire(ep_, peerMode_, link_, goodbyeRecv_, sendSeq_);
    ep_ = nullptr;
    goodbyeRecv_ = nullptr;
  }
  if (goodbyeRecv_ != nullptr) {
    ucp_request_cancel(worker_, goodbyeRecv_);
    ucp_request_free(goodbyeRecv_);
    goodbyeRecv_ = nullptr;
  }
  if (ep_ != nullptr) {
    if (peerMode_) {
      closeEndpoint(true, kCloseTimeoutMs);
    } else {
      factory_->taint();  // unfinished operations: only a forced close could end them
    }
  }
  releaseAll();
  if (recvsSettled) link_->staging.clear();
}

void UcxConnection::postGoodbyeRecv() {
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  ucs_status_ptr_t r = ucp_tag_recv_nbx(worker_, &link_->goodbyeIn, sizeof(link_->goodbyeIn),
                                        goodbyeTag(peer_), kFullMask, &param);
  if (r != nullptr && !UCS_PTR_IS_ERR(r)) goodbyeRecv_ = r;
}

Status UcxConnection::usable() const {
  if (broken_) return brokenStatus_;
  return linkStatus();
}

Status UcxConnection::linkStatus() const {
  if (severed_ || severRequested_.load())
    return remoteError(peerName_ + ": ucx link severed (fault injection)").blaming(peer_);
  if (link_->failed) return describe("endpoint", link_->failure);
  return Status::ok();
}

Status UcxConnection::fail(Status st) {
  if (!broken_ && !st.isOk()) {
    broken_ = true;
    brokenStatus_ = st;
  }
  return st;
}

Status UcxConnection::describe(const std::string& what, ucs_status_t st) const {
  std::string msg = peerName_ + ": ucx " + what + " failed: " + ucs_status_string(st);
  // Local resource trouble is not the peer's fault; everything else on a link is.
  if (st == UCS_ERR_NO_MEMORY || st == UCS_ERR_INVALID_PARAM || st == UCS_ERR_UNSUPPORTED ||
      st == UCS_ERR_EXCEEDS_LIMIT)
    return systemError(msg);
  if (link_->failed || st == UCS_ERR_CONNECTION_RESET || st == UCS_ERR_ENDPOINT_TIMEOUT ||
      st == UCS_ERR_UNREACHABLE)
    msg += " (the peer process exited, crashed or lost its link)";
  return remoteError(msg).blaming(peer_);
}

Status UcxConnection::ucxFailure(const std::string& what, ucs_status_t st) {
  return fail(describe(what, st));
}

Status UcxConnection::postSend(const void* data, size_t bytes, uint64_t token) {
  BCCL_RETURN_IF_ERROR(usable());
  ops_.emplace_back(token, true, RecvTarget{}, bytes, sendSeq_++);
  Op& op = ops_.back();
  const size_t pieceBytes = op.pieceBytes;
  const char* base = bytes == 0 ? zeroByteBuffer : static_cast<const char*>(data);
  ucp_request_param_t param{};  // contiguous bytes; completion is polled
  while (op.nextPiece < op.pieces) {
    const uint32_t i = op.nextPiece++;
    const size_t off = static_cast<size_t>(i) * pieceBytes;
    const size_t len = std::min(pieceBytes, bytes - off);
    ucs_status_ptr_t r = ucp_tag_send_nbx(ep_, base + off, len,
                                          dataTag(myRank_, op.seq, i, i + 1 == op.pieces), &param);
    if (UCS_PTR_IS_ERR(r)) return ucxFailure("send", UCS_PTR_STATUS(r));
    if (r == nullptr) {
      ++op.donePieces;
    } else {
      op.inflight.push_back(Piece{r, i, -1});
    }
  }
  return Status::ok();
}

Status UcxConnection::postRecv(const RecvTarget& target, size_t bytes, uint64_t token) {
  BCCL_RETURN_IF_ERROR(usable());
  ops_.emplace_back(token, false, target, bytes, recvSeq_++);
  return postPendingRecvPieces();
}

Status UcxConnection::postPendingRecvPieces() {
  // Staging slots go to reduced messages strictly in posting order: a later message holding
  // slots while an earlier one waits could deadlock if the peer sends the later one only after
  // this rank finishes the earlier. Plain receives need no slot and post at once.
  bool slotsTaken = false;
  for (Op& op : ops_) {
    if (op.send || op.nextPiece == op.pieces) continue;
    const bool reduce = op.target.operand != nullptr;
    if (reduce && slotsTaken) continue;
    while (op.nextPiece < op.pieces) {
      if (reduce && freeSlots_.empty()) {
        slotsTaken = true;
        break;
      }
      BCCL_RETURN_IF_ERROR(postRecvPiece(op));
    }
  }
  return Status::ok();
}

Status UcxConnection::postRecvPiece(Op& op) {
  const uint32_t i = op.nextPiece++;
  const size_t off = static_cast<size_t>(i) * op.pieceBytes;
  const size_t len = std::min(op.pieceBytes, op.bytes - off);
  int slot = -1;
  char* dst = op.bytes == 0 ? zeroByteBuffer : op.target.dst + off;
  if (op.target.operand != nullptr && len > 0) {
    slot = freeSlots_.back();
    freeSlots_.pop_back();
    std::vector<char>& buf = link_->staging[slot];
    if (buf.size() < len) buf.resize(op.pieceBytes);
    dst = buf.data();
  }
  ucp_request_param_t param{};
  // Always a request: UCX 1.13 leaves recv_info unset when it completes a receive at once,
  // and the sender's tag and length are what the size check needs.
  param.op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  ucs_status_ptr_t r =
      ucp_tag_recv_nbx(worker_, dst, len, dataTag(peer_, op.seq, i, false), kDataMask, &param);
  if (UCS_PTR_IS_ERR(r)) return ucxFailure("receive", UCS_PTR_STATUS(r));
  op.inflight.push_back(Piece{r, i, slot});
  return Status::ok();
}

Status UcxConnection::finishRecvPiece(Op& op, uint32_t index, int slot, ucs_status_t st,
                                      const ucp_tag_recv_info_t& info) {
  const size_t off = static_cast<size_t>(index) * op.pieceBytes;
  const size_t want = std::min(op.pieceBytes, op.bytes - off);
  const bool wantLast = index + 1 == op.pieces;
  const bool last = (info.sender_tag & kLastBit) != 0;
  const std::string expected = std::to_string(op.bytes) + " bytes were expected";
  const char* why = ": mismatched counts or datatypes between ranks";
  if (st == UCS_ERR_MESSAGE_TRUNCATED)
    return fail(invalidUsage(peerName_ + " sent more bytes than the " + expected + why));
  if (st != UCS_OK) return ucxFailure("receive", st);
  if (info.length != want || last != wantLast) {
    if (op.pieces == 1 && last)
      return fail(invalidUsage(peerName_ + " sent " + std::to_string(info.length) +
                               " bytes where " + expected + why));
    return fail(
        invalidUsage(peerName_ + " sent a message whose size differs from the " + expected + why));
  }
  if (slot >= 0) {
    op.target.deliver(off, link_->staging[slot].data(), want);
    freeSlots_.push_back(slot);
  }
  ++op.donePieces;
  return Status::ok();
}

Status UcxConnection::pollOp(Op& op) {
  for (size_t k = 0; k < op.inflight.size();) {
    const Piece p = op.inflight[k];
    ucp_tag_recv_info_t info{};
    const ucs_status_t st =
        op.send ? ucp_request_check_status(p.request) : ucp_tag_recv_request_test(p.request, &info);
    if (st == UCS_INPROGRESS) {
      ++k;
      continue;
    }
    ucp_request_free(p.request);
    op.inflight[k] = op.inflight.back();
    op.inflight.pop_back();
    if (op.send) {
      if (st != UCS_OK) return ucxFailure("send", st);
      ++op.donePieces;
    } else {
      BCCL_RETURN_IF_ERROR(finishRecvPiece(op, p.index, p.slot, st, info));
    }
  }
  return Status::ok();
}

Status UcxConnection::progress(std::vector<uint64_t>* completed) {
  if (broken_) return brokenStatus_;
  if (severRequested_.load() && !severed_) applySever();
  // Before polling: the requests a forced close cancelled would blame the wrong thing.
  if (severed_) return fail(linkStatus());
  for (int i = 0; i < kProgressBurst && ucp_worker_progress(worker_) != 0; ++i) {
  }
  // Completions first: data that arrived before the peer failed is still good.
  for (Op& op : ops_)
    if (!op.reported) BCCL_RETURN_IF_ERROR(pollOp(op));
  BCCL_RETURN_IF_ERROR(postPendingRecvPieces());
  for (Op& op : ops_) {
    if (op.reported || op.donePieces < op.pieces) continue;
    completed->push_back(op.token);
    op.reported = true;
  }
  while (!ops_.empty() && ops_.front().reported) ops_.pop_front();
  return checkPeerGone();
}

void UcxConnection::checkGoodbye() {
  if (goodbyeRecv_ == nullptr) return;
  const ucs_status_t st = ucp_request_check_status(goodbyeRecv_);
  if (st == UCS_INPROGRESS) return;
  ucp_request_free(goodbyeRecv_);
  goodbyeRecv_ = nullptr;
  peerClosed_ = st == UCS_OK;
}

Status UcxConnection::checkPeerGone() {
  checkGoodbye();
  if (ops_.empty()) return Status::ok();
  BCCL_RETURN_IF_ERROR(fail(linkStatus()));
  if (!peerClosed_) return Status::ok();
  const uint32_t peerSent = static_cast<uint32_t>(link_->goodbyeIn.sent);
  const uint32_t peerReceived = static_cast<uint32_t>(link_->goodbyeIn.received);
  for (const Op& op : ops_) {
    if (op.reported || op.donePieces == op.pieces) continue;
    // Sequence numbers wrap; compare their distance.
    if (static_cast<int32_t>(op.seq - (op.send ? peerReceived : peerSent)) < 0) continue;
    return fail(remoteError(peerName_ + " closed its ucx connection while " +
                            std::to_string(op.bytes) + " bytes were still to be " +
                            (op.send ? "sent to it" : "received from it"))
                    .blaming(peer_));
  }
  return Status::ok();
}

void UcxConnection::addToWaitSet(WaitSet* set) const {
  const int fd = factory_->prepareToSleep();
  if (fd >= 0) set->addFd(fd, POLLIN);
}

uint32_t UcxConnection::firstUnfinished(bool send) const {
  if (haveFloors_) return floors_[send ? 1 : 0];
  for (const Op& op : ops_)
    if (op.send == send && op.donePieces < op.pieces) return op.seq;
  return send ? sendSeq_ : recvSeq_;
}

bool UcxConnection::settle(int timeoutMs) {
  for (Op& op : ops_)
    if (!op.send)
      for (const Piece& p : op.inflight) ucp_request_cancel(worker_, p.request);
  const auto deadline = deadlineIn(timeoutMs);
  for (;;) {
    bool receiving = false;
    for (Op& op : ops_) {
      for (size_t k = 0; k < op.inflight.size();) {
        const ucs_status_t st = ucp_request_check_status(op.inflight[k].request);
        if (st == UCS_INPROGRESS) {
          receiving = receiving || !op.send;
          ++k;
          continue;
        }
        if (op.send && st == UCS_OK) ++op.donePieces;  // counted for the goodbye
        ucp_request_free(op.inflight[k].request);
        op.inflight[k] = op.inflight.back();
        op.inflight.pop_back();
      }
    }
    // Unfinished sends only read our memory; a receive still running would write it.
    if (!receiving) return true;
    if (afterDeadline(deadline)) return false;
    ucp_worker_progress(worker_);
  }
}

void UcxConnection::releaseAll() {
  for (Op& op : ops_)
    for (const Piece& p : op.inflight) ucp_request_free(p.request);
  ops_.clear();
}

void UcxConnection::dropPending() {
  if (severRequested_.load() && !severed_) applySever();
  if (!haveFloors_) {
    floors_[0] = firstUnfinished(false);
    floors_[1] = firstUnfinished(true);
    haveFloors_ = true;
  }
  for (const Op& op : ops_) sendsAbandoned_ = sendsAbandoned_ || (op.send && !op.inflight.empty());
  if (!settle(kSettleTimeoutMs)) {
    if (peerMode_) {
      // A matched receive that does not finish: only closing the endpoint stops UCX from
      // writing into memory the caller is about to reuse.
      closeEndpoint(true, kCloseTimeoutMs);
      settle(kSettleTimeoutMs);
    } else {
      BCCL_WARN("ucx: a receive from %s could not be cancelled", peerName_.c_str());
    }
  }
  releaseAll();
  fail(internalError(peerName_ + ": ucx connection unusable after an earlier failure"));
}

void UcxConnection::sever() { severRequested_.store(true); }

void UcxConnection::applySever() {
  severed_ = true;
  // A forced close makes the peer's transport fail too, as a cut link would; without PEER
  // error handling that is not allowed, and the endpoint is simply no longer used.
  if (peerMode_) closeEndpoint(true, kCloseTimeoutMs);
}

bool UcxConnection::closeEndpoint(bool force, int timeoutMs) {
  if (ep_ == nullptr) return true;
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t r = ucp_ep_close_nbx(ep_, &param);
  ep_ = nullptr;
  if (r == nullptr || UCS_PTR_IS_ERR(r)) return true;
  const auto deadline = deadlineIn(timeoutMs);
  while (ucp_request_check_status(r) == UCS_INPROGRESS && !afterDeadline(deadline))
    ucp_worker_progress(worker_);
  const bool done = ucp_request_check_status(r) != UCS_INPROGRESS;
  ucp_request_free(r);
  return done;
}

}  // namespace bccl
