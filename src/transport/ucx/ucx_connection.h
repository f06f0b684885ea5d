// UCX transport, data half: a Connection over one UCP endpoint, moving messages with the tag API.
// Each message's tag names its sender and its per-direction sequence number, so messages match
// in posting order whatever order UCX delivers them in. Messages above a chunk size travel as
// several tagged pieces, so a receiver that reduces can stage and reduce piece by piece (bounded
// memory, reduction overlapping the transfer) and the last piece is flagged so a size mismatch
// is always detected.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <deque>
#include <string>
#include <vector>

#include "transport/transport.h"
#include "transport/ucx/ucx_transport.h"

namespace bccl {

// Tags carry the sender's rank in 19 bits; the top bit marks control messages (goodbyes).
constexpr int kUcxMaxRank = (1 << 19) - 1;
constexpr uint64_t kUcxControlBit = 1ull << 63;

// A closing side tells its peer where its sequence numbers stopped in each direction: the
// peer's receives from `sent` on, and its sends from `received` on, can then never complete.
struct UcxGoodbye {
  uint64_t sent = 0;      // first message of ours that did not (or may not) fully go out
  uint64_t received = 0;  // first message to us that was not fully received
};

// What UCX may write after the Connection that owns it is gone (the endpoint error callback,
// a receive that could not be cancelled); the factory keeps it until the worker is destroyed.
struct UcxLinkState {
  bool failed = false;  // set by the endpoint error callback
  ucs_status_t failure = UCS_OK;
  UcxGoodbye goodbyeOut;                   // told to the peer when closing
  UcxGoodbye goodbyeIn;                    // the peer's
  std::vector<std::vector<char>> staging;  // pieces of messages being reduced
};

// The endpoint error callback; `arg` is the endpoint's UcxLinkState.
void ucxEndpointFailed(void* arg, ucp_ep_h ep, ucs_status_t status);

class UcxConnection final : public Connection {
 public:
  // `peerMode`: the endpoint was created with UCP_ERR_HANDLING_MODE_PEER (UCX reports a dead
  // peer, and force-closing is allowed); without it only a flush close is safe.
  UcxConnection(UcxEndpointFactory* factory, UcxLinkState* link, ucp_ep_h ep, bool peerMode,
                int myRank, int peer, std::string peerName);
  ~UcxConnection() override;

  int peer() const override { return peer_; }
  const char* kind() const override { return "ucx"; }
  Status postSend(const void* data, size_t bytes, uint64_t token) override;
  Status postRecv(const RecvTarget& target, size_t bytes, uint64_t token) override;
  Status progress(std::vector<uint64_t>* completed) override;
  bool hasPending() const override { return !ops_.empty(); }
  void addToWaitSet(WaitSet* set) const override;
  void dropPending() override;
  void sever() override;

 private:
  struct Piece {
    void* request;
    uint32_t index;
    int slot;  // staging slot of a reduced piece, or -1
  };
  struct Op {
    Op(uint64_t token, bool send, const RecvTarget& target, size_t bytes, uint32_t seq);
    uint64_t token;
    bool send;
    RecvTarget target;
    size_t bytes;
    uint32_t seq;
    size_t pieceBytes;
    uint32_t pieces;
    uint32_t nextPiece = 0;  // next to post
    uint32_t donePieces = 0;
    bool reported = false;
    std::vector<Piece> inflight;
  };

  Status usable() const;
  Status linkStatus() const;
  Status describe(const std::string& what, ucs_status_t st) const;
  // Records the first failure (the connection is unusable afterwards) and returns it.
  Status fail(Status st);
  Status ucxFailure(const std::string& what, ucs_status_t st);
  Status postPendingRecvPieces();
  Status postRecvPiece(Op& op);
  Status finishRecvPiece(Op& op, uint32_t index, int slot, ucs_status_t st,
                         const ucp_tag_recv_info_t& info);
  Status pollOp(Op& op);
  Status checkPeerGone();
  void checkGoodbye();
  void postGoodbyeRecv();
  // Cancels our receives and waits (bounded) until UCX no longer writes to their buffers.
  bool settle(int timeoutMs);
  // Hands every request still held back to UCX, which releases it when it finishes.
  void releaseAll();
  // Returns whether the close finished in time (UCX has let go of the endpoint).
  bool closeEndpoint(bool force, int timeoutMs);
  void applySever();
  // The lowest sequence number not finished in one direction (or dropped unfinished).
  uint32_t firstUnfinished(bool send) const;

  UcxEndpointFactory* factory_;
  ucp_worker_h worker_;
  UcxLinkState* link_;
  ucp_ep_h ep_;
  int myRank_;
  int peer_;
  std::string peerName_;
  std::deque<Op> ops_;
  uint32_t sendSeq_ = 0;
  uint32_t recvSeq_ = 0;
  std::vector<int> freeSlots_;
  void* goodbyeRecv_ = nullptr;
  bool peerClosed_ = false;
  const bool peerMode_;
  // sever() may come from another thread (fault injection) while the executor uses this
  // connection, so it only raises the flag; the executor's thread acts on it.
  std::atomic<bool> severRequested_{false};
  bool severed_ = false;
  // Set by dropPending: where each direction (0 receive, 1 send) stopped.
  bool haveFloors_ = false;
  uint32_t floors_[2] = {0, 0};
  bool sendsAbandoned_ = false;  // dropped sends UCX may still be working on
  bool broken_ = false;
  Status brokenStatus_;
};

}  // namespace bccl
