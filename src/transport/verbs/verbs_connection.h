// Verbs transport, data half: a Connection over one or more RC queue pairs to one peer. The
// protocol is receiver-driven (see verbs_wire.h): posting a receive makes this side grant the
// peer chunks of its receive ring (or of the user buffer itself, in zero-copy mode); the peer
// answers each grant with one RDMA WRITE WITH IMM, whose completion here means the chunk has
// landed. So:
//  - small messages cost one grant (usually sent long before the data is ready) and one write;
//  - large messages stream through the ring chunk by chunk: a sender stages a chunk in its own
//    pre-registered bounce slot (or, zero-copy, writes from the registered user buffer) and the
//    receiver copies or reduces each chunk out of its slot, then grants the slot again. Ring
//    slots, grant entries and posted receive entries are all sized so that no credit can run
//    out on the wire: a grant is only issued when its whole path is reserved;
//  - chunks are spread over the QPs by the receiver when it grants (pickQp: the QP with the
//    fewest grants outstanding, so a slower QP, whose grants come back later, gets fewer); the
//    sender simply follows the grants;
//  - a data QP that fails (an error completion, a fatal event, or found in the error state)
//    is cut out and its work moves to the others, without an error to the caller
//    (verbs_failover.cc); only losing the control QP or the last data QP fails the connection;
//  - grants and credits travel on their own control QP: a QP executes its work in order, so on
//    a data QP a grant would wait behind up to a whole window of our own outgoing data, and in
//    bidirectional traffic (every ring collective) each side would starve the other of credits;
//  - messages up to the eager size skip the grant when the sender holds an eager credit: one
//    write of header and payload into the receiver's eager ring (verbs_eager.cc), on the
//    control QP, so a data QP's failure cannot lose an eager message.
// One thread at a time drives a connection (the executor's); sever() may come from another.
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "transport/transport.h"
#include "transport/verbs/verbs_context.h"
#include "transport/verbs/verbs_wire.h"

namespace bccl {

class VerbsConnection final : public Connection {
 public:
  // Creates the CQ, QPs (in INIT) and buffers; localBlob() is then ready for the peer.
  static StatusOr<std::unique_ptr<VerbsConnection>> create(VerbsContext* ctx, int peer,
                                                           std::string peerName);
  ~VerbsConnection() override;

  const VerbsBlob& localBlob() const { return local_; }
  // Brings every QP to RTS towards the peer's blob. The peer must not be written to before it
  // has done the same (the bootstrap exchanges a "ready" after this).
  Status connect(const VerbsBlob& remote);

  int peer() const override { return peer_; }
  const char* kind() const override { return "verbs"; }
  std::string describe() const override;
  Status postSend(const void* data, size_t bytes, uint64_t token) override;
  Status postRecv(const RecvTarget& target, size_t bytes, uint64_t token) override;
  Status progress(std::vector<uint64_t>* completed) override;
  // Operations, and also grants still to answer (a cancel is owed for an eager message).
  bool hasPending() const override;
  void addToWaitSet(WaitSet* set) const override;
  void dropPending() override;
  void setFailureCause(int rank) override { failureCause_ = rank; }
  void sever() override;
  // Fault injection: forces the highest live data QP into the error state (another thread may
  // call it); the connection finds it and fails over like after a real QP failure.
  bool failOnePath() override;
  // Data QPs still in use (for tests and messages).
  uint32_t liveQps() const;
  uint64_t grantsIssuedOn(uint32_t qi) const { return qps_[qi].grantsIssued; }

  // From the context: an asynchronous event hit one of our QPs.
  void onAsyncEvent(uint32_t rail, uint32_t qpn, const char* event);

 private:
  struct SendOp {
    const char* data;
    size_t bytes;
    uint64_t token;
    uint32_t seq;
    size_t postedBytes = 0;  // answered grants (chunks may be served in any order)
    uint32_t chunksPosted = 0;
    uint32_t inflight = 0;       // writes posted, not completed
    bool reported = false;       // token returned (may precede `done` when staged in bounce slots)
    bool done = false;           // every write completed: can be forgotten
    bool eager = false;          // went into an eager slot: grants for it are cancelled
    std::vector<ibv_mr*> holds;  // cached registrations of the user buffer
    // Chunks written on a QP that failed before confirming them: the receiver either grants
    // them again or, closing that QP, says they had landed (verbs_failover.cc).
    struct Lost {
      uint64_t offset;
      uint64_t bytes;
      const char* staged;  // its copy in the dead QP's bounce slot, or null (from `data`)
      uint32_t qp;
    };
    std::vector<Lost> lost;
  };
  struct RecvOp {
    RecvTarget target;
    size_t bytes;
    uint64_t token;
    uint32_t seq;
    bool direct = false;  // zero-copy: chunks land in target.dst
    size_t grantedBytes = 0;
    bool granted = false;  // every chunk has been granted (a 0-byte message has one grant)
    size_t receivedBytes = 0;
    uint32_t chunksGranted = 0, chunksReceived = 0;  // received: answered (data or cancel)
    bool eagerTaken = false;                         // its bytes came in an eager slot
    uint32_t lostChunks = 0;  // grants on a failed QP, waiting to be granted again
    bool reported = false;    // token returned
    bool done = false;        // reported and every grant answered: can be forgotten
    int64_t postedNs = 0;     // when posted: small receives are granted only after a while
    ibv_mr* hold = nullptr;
  };
  // A grant we issued, waiting for its chunk.
  struct Issued {
    RecvOp* op = nullptr;
    uint64_t offset = 0;
    uint64_t bytes = 0;
    int slot = -1;  // ring slot, or -1 for a zero-copy grant
  };
  // A data write on its way: completions come in posting order, so the front is the oldest.
  struct Flight {
    uint32_t seq;
    uint64_t offset;
    uint64_t bytes;
    const char* staged;  // bounce slot, or null when written from the user buffer
  };
  // A chunk whose grant went down with its QP, to be granted on another.
  struct Regrant {
    RecvOp* op;
    uint64_t offset;
    uint64_t bytes;
    uint32_t fromQp;
  };
  struct Qp {
    ibv_qp* qp = nullptr;
    uint32_t psn = 0;
    uint32_t rail = 0;  // the device it lives on: QP i on rail i % rails (so is the peer's)
    // Failover state (verbs_failover.cc).
    bool dead = false;
    bool recovered = false;    // its unanswered grants are queued to be granted again
    bool closedSent = false;   // the peer was told they all were
    bool peerClosed = false;   // the peer's Closed came: our lost chunks are settled
    bool reset = false;        // our end is connected again, waiting for the peer's Up
    uint32_t incarnation = 0;  // times it has been reset and connected again
    uint32_t peerUp = 0;       // incarnation named by the peer's last Up notice
    uint32_t failures = 0;     // deaths so far: the backoff before the next reset
    int64_t deadNs = 0;
    int64_t retryNs = 0;           // not reset before this
    uint64_t grantsIssued = 0;     // over its whole life (tests see a QP put back carry data)
    uint32_t recvOutstanding = 0;  // receive entries posted and not yet completed
    uint32_t sendOutstanding = 0;  // work requests posted on it and not yet completed
    uint32_t regrantsLeft = 0;     // of its grants, not yet granted again elsewhere
    std::deque<Flight> flights;
    // Receive side: ring slots and grant entries, both used and freed in order.
    char* ring = nullptr;
    ibv_mr* ringMr = nullptr;
    uint32_t ringHead = 0, ringUsed = 0;
    std::vector<Issued> issued;  // by grant index
    uint32_t grantHead = 0, grantsOut = 0;
    VerbsGrant* grantOut = nullptr;  // staging of the grants we write (source of the writes)
    ibv_mr* grantOutMr = nullptr;
    uint32_t grantOutBusy = 0;  // grant writes not yet completed locally
    // Send side: grants the peer wrote to us, in arrival order; bounce slots used in order.
    VerbsGrant* grantIn = nullptr;
    ibv_mr* grantInMr = nullptr;
    std::deque<VerbsGrant> pending;
    std::deque<uint32_t> pendingIndex;
    char* bounce = nullptr;
    ibv_mr* bounceMr = nullptr;
    uint32_t bounceHead = 0, bounceUsed = 0;
  };

  // Work request ids of sends: kind (8 bits) | QP index (8) | bounce flag (1) | message seq (32).
  enum WrKind : uint64_t {
    kWrGrant = 1,
    kWrData = 2,
    kWrMismatch = 3,
    kWrEager = 4,
    kWrCancel = 5,
    kWrCredit = 6,
    kWrQpNotice = 7
  };
  static constexpr uint64_t kWrBounce = 1ull << 40;
  static uint64_t sendWrId(WrKind kind, uint32_t qi, uint32_t seq, bool bounce = false) {
    return (static_cast<uint64_t>(kind) << 56) | (static_cast<uint64_t>(qi) << 48) |
           (bounce ? kWrBounce : 0) | seq;
  }
  static WrKind wrKind(uint64_t id) { return static_cast<WrKind>(id >> 56); }  // 0: a receive
  static uint32_t wrQp(uint64_t id) { return static_cast<uint32_t>((id >> 48) & 0xff); }
  static uint32_t wrSeq(uint64_t id) { return static_cast<uint32_t>(id); }

  VerbsConnection(VerbsContext* ctx, int peer, std::string peerName);
  Status allocate();
  Status postRecvEntries(ibv_qp* qp, uint32_t qi, uint32_t count);
  Status pollCompletions(std::vector<uint64_t>* completed);
  Status onRecvCompletion(uint32_t qi, const ibv_wc& wc, std::vector<uint64_t>* completed);
  Status onSendCompletion(const ibv_wc& wc, uint32_t rail, std::vector<uint64_t>* completed);
  Status issueGrants();
  Status postGrant(RecvOp& op, uint64_t offset, size_t chunk, bool needSlot, uint32_t qi);
  Status serveGrants();
  Status serveGrant(uint32_t qi, const VerbsGrant& g, uint32_t index, bool* served);
  int pickQp(bool needSlot) const;
  SendOp* sendBySeq(uint32_t seq);
  void finishSend(SendOp& op, std::vector<uint64_t>* completed);
  // Reports a receive whose bytes are all delivered; it is forgotten once its grants returned.
  void finishRecv(RecvOp& op, std::vector<uint64_t>* completed);
  void retireRecv(RecvOp& op);
  RecvOp* recvBySeq(uint32_t seq);
  // Eager path (verbs_eager.cc).
  bool eagerEnabled() const { return eagerSlots_ > 0; }
  bool grantDue(const RecvOp& op, int64_t now) const;
  Status trySendEager(SendOp& op);
  Status onEager(uint32_t slot, std::vector<uint64_t>* completed);
  Status takeEager(RecvOp& op, uint32_t slot, std::vector<uint64_t>* completed);
  Status postCancel(uint32_t qi, uint32_t grantIndex, uint32_t seq);
  Status maybeReturnCredits(bool force);
  // A zero-length RDMA WRITE WITH IMM (only the immediate travels), and posting one on the
  // control QP.
  static ibv_send_wr immOnlyWr(uint64_t wrId, uint32_t imm, uint64_t addr, uint32_t rkey);
  Status postCtrlImm(uint64_t wrId, uint32_t imm, uint64_t addr, uint32_t rkey);
  Status onControlCompletion(const ibv_wc& wc, std::vector<uint64_t>* completed);
  void popDone();
  Status completionError(const ibv_wc& wc, uint32_t rail);
  // Failover (verbs_failover.cc).
  int dataQpIndex(uint32_t rail, uint32_t qpNum) const;
  // An unsuccessful completion: a data QP fails over; anything else fails the connection.
  Status onFailedCompletion(const ibv_wc& wc, uint32_t rail);
  // Cuts data QP `qi` out. `why` goes into the WARN; `fromPeer`: the peer told us (no notice).
  Status retireQp(uint32_t qi, const std::string& why, bool fromPeer);
  // QPs found in the error state (fault injection, or a failure without a completion).
  Status checkSuspectQps();
  // Grantor side: once a dead QP's landed chunks are all processed, grants the rest again.
  Status recoverDeadQps();
  // ... and once all of them are granted, tells the sender with a Closed notice.
  Status closeRecoveredQps();
  Status onQpNotice(uint32_t index);
  // Resets a dead QP whose failure both ends have settled, and puts it back once both are up.
  Status reviveDeadQps();
  // Both ends of dead QP `qi` are up again (ours reset, the peer's Up received).
  bool revivable(uint32_t qi) const;
  // How long a QP that has failed `failures` times before stays out before its reset.
  int64_t retryDelayNs(uint32_t failures) const;
  void markRevived(uint32_t qi);
  // Sender side: the peer has granted again everything of QP `qi` that did not land.
  void onQpClosed(uint32_t qi);
  static int lostChunkAt(const SendOp& op, uint64_t offset);
  Status postQpNotice(uint32_t kind, uint32_t qi);
  Status postDataWr(uint32_t qi, ibv_send_wr* wr);
  // After posting a size-mismatch notice: waits (bounded) until it has left, so failing the
  // connection right after cannot flush it unsent.
  void waitForNotice();
  Status fail(Status st);
  Status usable() const;

  VerbsContext* ctx_;
  const VerbsConfig cfg_;
  int peer_;
  std::string peerName_;
  std::vector<ibv_cq*> cqs_;  // one per rail (a CQ belongs to one device)
  uint32_t dataRecvWr_ = 0;   // receive entries each data QP keeps posted
  std::vector<Qp> qps_;
  // Grants and credits; its receive entries carry kCtrlQp as their wr_id.
  static constexpr uint32_t kCtrlQp = 255;
  ibv_qp* ctrl_ = nullptr;
  uint32_t ctrlPsn_ = 0;
  VerbsBlob local_;
  VerbsBlob remote_;
  bool connected_ = false;
  bool zeroCopy_ = false;  // both sides asked for it
  uint32_t peerSlotBytes_ = 0;
  std::deque<SendOp> sends_;
  std::vector<uint64_t> early_;  // ops finished while posting, reported by the next progress()
  // Eager ring (written over the control QP): ours receives the peer's small messages, the bounce
  // stages ours.
  uint32_t eagerSlots_ = 0;  // 0: eager off on this connection
  uint32_t eagerBytes_ = 0;  // payload per slot
  size_t eagerStride_ = 0;   // header + payload, cache-line aligned
  char* eagerIn_ = nullptr;
  ibv_mr* eagerInMr_ = nullptr;
  char* eagerOut_ = nullptr;
  ibv_mr* eagerOutMr_ = nullptr;
  uint32_t eagerOutHead_ = 0;    // next eager slot (ours and the peer's, in step)
  uint32_t eagerSent_ = 0;       // eager messages written (mod 2^29)
  uint32_t eagerPeerFreed_ = 0;  // of those, freed by the peer (its last credit immediate)
  uint32_t eagerOutBusy_ = 0;    // bounce slots whose write has not completed
  uint32_t eagerFreed_ = 0;      // peer's eager slots we have consumed (mod 2^29)
  uint32_t eagerAnnounced_ = 0;  // ... and told the peer about
  bool creditInFlight_ = false;
  std::deque<std::pair<uint32_t, uint32_t>> unexpected_;  // (seq, slot) before their receive
  std::deque<RecvOp> recvs_;
  uint32_t sendSeq_ = 0, recvSeq_ = 0;
  uint32_t nextQp_ = 0;
  int failureCause_ = -1;
  bool broken_ = false;
  Status brokenStatus_;
  std::string asyncFailure_;
  std::atomic<bool> severed_{false};
  std::deque<Regrant> regrants_;
  std::vector<std::pair<uint32_t, std::string>> asyncDeadQps_;  // data QPs hit by a fatal event
  std::atomic<uint32_t> suspectQps_{0};                         // bit per data QP: check its state
  std::atomic<uint32_t> deadMask_{0};  // bit per data QP cut out (read by failOnePath)
  int64_t lastStateCheckNs_ = 0;
};

}  // namespace bccl
