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
//  - chunks are spread over the QPs by the receiver when it grants (pickQp); the sender simply
//    follows the grants, so a weighted policy (multipath) only has to change pickQp.
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
  bool hasPending() const override { return !sends_.empty() || !recvs_.empty(); }
  void addToWaitSet(WaitSet* set) const override;
  void dropPending() override;
  void setFailureCause(int rank) override { failureCause_ = rank; }
  void sever() override;

  // From the context: an asynchronous event hit one of our QPs.
  void onAsyncEvent(uint32_t qpn, const char* event);

 private:
  struct SendOp {
    const char* data;
    size_t bytes;
    uint64_t token;
    uint32_t seq;
    size_t postedBytes = 0;  // answered grants (chunks may be served in any order)
    uint32_t chunksPosted = 0;
    uint32_t inflight = 0;  // writes posted, not completed
    bool reported = false;  // token returned (may precede `done` when staged in bounce slots)
    bool done = false;      // every write completed: can be forgotten
    std::vector<ibv_mr*> holds;  // cached registrations of the user buffer
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
    uint32_t chunksGranted = 0, chunksReceived = 0;
    bool done = false;
    ibv_mr* hold = nullptr;
  };
  // A grant we issued, waiting for its chunk.
  struct Issued {
    RecvOp* op = nullptr;
    uint64_t offset = 0;
    uint64_t bytes = 0;
    int slot = -1;  // ring slot, or -1 for a zero-copy grant
  };
  struct Qp {
    ibv_qp* qp = nullptr;
    uint32_t psn = 0;
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
    uint32_t recvPosted = 0;
  };

  VerbsConnection(VerbsContext* ctx, int peer, std::string peerName);
  Status allocate();
  Status postRecvEntries(Qp& q, uint32_t count);
  Status pollCompletions(std::vector<uint64_t>* completed);
  Status onRecvCompletion(uint32_t qi, const ibv_wc& wc, std::vector<uint64_t>* completed);
  Status onSendCompletion(const ibv_wc& wc, std::vector<uint64_t>* completed);
  Status issueGrants();
  Status serveGrants();
  Status serveGrant(uint32_t qi, const VerbsGrant& g, uint32_t index, bool* served);
  int pickQp(bool needSlot) const;
  SendOp* sendBySeq(uint32_t seq);
  void finishSend(SendOp& op, std::vector<uint64_t>* completed);
  void finishRecv(RecvOp& op, std::vector<uint64_t>* completed);
  void popDone();
  Status completionError(const ibv_wc& wc);
  // After posting a size-mismatch notice: waits (bounded) until it has left, so failing the
  // connection right after cannot flush it unsent.
  void waitForNotice();
  Status fail(Status st);
  Status usable() const;

  VerbsContext* ctx_;
  const VerbsConfig cfg_;
  int peer_;
  std::string peerName_;
  ibv_cq* cq_ = nullptr;
  std::vector<Qp> qps_;
  VerbsBlob local_;
  VerbsBlob remote_;
  bool connected_ = false;
  bool zeroCopy_ = false;  // both sides asked for it
  uint32_t peerSlotBytes_ = 0;
  std::deque<SendOp> sends_;
  std::vector<uint64_t> early_;  // sends finished while posting, reported by the next progress()
  std::deque<RecvOp> recvs_;
  uint32_t sendSeq_ = 0, recvSeq_ = 0;
  uint32_t nextQp_ = 0;
  int failureCause_ = -1;
  bool broken_ = false;
  Status brokenStatus_;
  std::string asyncFailure_;
  std::atomic<bool> severed_{false};
};

}  // namespace bccl
