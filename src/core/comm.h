// The communicator: who the ranks are, one Connection per peer, the sticky error, the abort
// flag, and the turn order of operations. It implements ExecContext for the executor and knows
// nothing about particular algorithms.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "algorithms/collective.h"
#include "algorithms/compiled_schedule.h"
#include "algorithms/exec_context.h"
#include "core/comm_config.h"
#include "core/rendezvous.h"
#include "fault/failure_detector.h"
#include "topology/topology.h"
#include "transport/shm/shm_board.h"
#include "transport/shm/shm_segment.h"
#include "transport/tcp/path_manager.h"

namespace bccl {

class UcxEndpointFactory;
class VerbsContext;

// What a new communicator learns from its rendezvous: its rank and everyone's PeerInfo.
struct Membership {
  int rank = -1;
  std::vector<PeerInfo> peers;
};
// Obtains the membership, given this rank's own PeerInfo (rendezvous, or a parent's shrink).
using MembershipExchange = std::function<StatusOr<Membership>(const PeerInfo& mine, Deadline)>;

class Communicator final : public ExecContext {
 public:
  static StatusOr<std::unique_ptr<Communicator>> create(int nranks, const UniqueIdData& id,
                                                        int rank, const CommConfig& config);
  // A communicator whose members are settled by `exchange` (shrink, split). `secret` must be
  // the same on all members; `shmTag` unique among them; `reachable` an address that peers can
  // reach this process at (its port is ignored).
  static StatusOr<std::unique_ptr<Communicator>> createFromExchange(
      const uint8_t* secret, int shmTag, const SockAddr& reachable, const CommConfig& config,
      const MembershipExchange& exchange, const SelectionContext* linkCostsFrom = nullptr);
  ~Communicator() override;

  int rank() const override { return rank_; }
  int nranks() const { return nranks_; }
  const PeerInfo& peer(int r) const { return peers_[r]; }
  const uint8_t* secret() const { return secret_; }
  uint64_t commId() const { return commId_; }
  int listenFd() const { return listenFd_; }
  // Child operations (shrink, split, agree) are collective: each gets the next number.
  uint32_t nextChildSeq() { return childSeq_++; }
  // Marks `rank` failed as if the failure detector had found it (e.g. agreed by survivors).
  void markFailed(int rank, const std::string& why);
  const CommConfig& config() const { return config_; }
  const HostTopology& topology() const { return topology_; }
  ScheduleCache& scheduleCache() { return scheduleCache_; }
  const SelectionContext& selection() const { return selection_; }

  // ExecContext
  Connection* connection(int peer) override;
  std::string peerName(int peer) const override;
  int timeoutMs() const override { return config_.timeoutMs; }
  int spinMicros() const override { return spinMicros_; }
  bool runsOnOtherCpu(int peer) const override { return onOtherCpu_[peer] != 0; }
  size_t cacheBytesPerRank() const override { return selection_.cacheBytesPerRank; }
  Status health() const override;
  void recordError(const Status& status) override;
  void addWakeHandles(WaitSet* set) override;
  Status checkPeerAlive(int peer) override;
  // Whether `peer` runs on this machine (whatever BCCL_HOST_ID says), so /proc can tell of it.
  bool sharesMachineWith(int peer) const;
  char* scratch(size_t bytes) override;
  bool isTurn(uint64_t ticket) const override { return serving_.load() == ticket; }
  void endTurn(uint64_t ticket) override { serving_.store(ticket + 1); }
  ShmBoard* board() override { return board_.get(); }

  uint64_t takeTicket() { return nextTicket_.fetch_add(1); }
  // Stops every wait on this communicator, from any thread, without touching peers.
  void abort();
  bool aborted() const { return aborted_.load(); }
  Status asyncError() const;
  // Fails every operation on this communicator, here and (through the detector) on every rank.
  void revoke();
  // Closes every socket abruptly, as if this host's network went away (fault injection).
  void dropConnections();
  // Breaks one path of each connection that has several (fault injection: a failing QP or
  // link); the connections carry on over the rest. Returns how many lost one.
  int failOnePathEach();
  // Numbers the operations issued on this communicator (for fault injection).
  uint64_t countOperation() { return opsIssued_++; }
  std::vector<int> failedRanks() const;

  // The last error of a call on this communicator, for bcclGetLastError(comm).
  void setLastError(const std::string& message);
  const char* lastError();

 private:
  explicit Communicator(const CommConfig& config);
  Status setUp(const uint8_t* secret, int shmTag, const SockAddr& routeTarget,
               const MembershipExchange& exchange);
  struct LinkWant {
    int peer;
    ConnKind kind;
    int channel = 0;  // the path, when there are several per peer
  };
  // Opens an authenticated TCP connection per want (fds parallel to wants).
  Status openLinks(const std::vector<LinkWant>& wants, std::vector<int>* fds);
  void onPeerFailed(int rank, const std::string& message);
  void wake();
  Status connectShmPeers(const std::vector<int>& localPeers);
  // Creates this rank's UCX worker when ucx is allowed, and publishes its address in `mine`.
  Status prepareUcx(PeerInfo* mine);
  // The network transport used with `peer` ("tcp" or "ucx"): the first in the configured
  // order that both ends offer.
  std::string networkTransportFor(int peer) const;
  Status connectUcxPeers(const std::vector<int>& peers);
  // Opens this rank's RDMA port when verbs is asked for (or may be chosen automatically) and
  // publishes the offer in `mine` (comm_verbs.cc).
  Status prepareVerbs(PeerInfo* mine);
  // Connects the peers whose wants are kVerbsSetup links: QP data out, QP data in, bring-up,
  // ready. Closes those links and sets their fds to -1.
  Status connectVerbsPeers(const std::vector<LinkWant>& wants, std::vector<int>* fds);
  // Both ends offer verbs on the same link layer.
  bool verbsReaches(int peer) const;

  int rank_ = -1;
  int nranks_ = 0;
  const CommConfig config_;
  uint64_t commId_ = 0;
  uint8_t secret_[kSecretBytes] = {};
  std::vector<PeerInfo> peers_;
  HostTopology topology_;
  ScheduleCache scheduleCache_;
  SelectionContext selection_;
  std::vector<std::unique_ptr<Connection>> connections_;
  // Reconnects failed paths of multipath TCP connections; stopped before they are freed.
  std::unique_ptr<PathManager> pathManager_;
  int listenFd_ = -1;
  int wakeFd_ = -1;  // eventfd: abort() makes it readable for waiters in poll()

  // Shared memory: my segment (inbound rings + my doorbell) and my local peers' segments.
  std::unique_ptr<ShmSegment> ownSegment_;
  std::vector<std::unique_ptr<ShmSegment>> peerSegments_;
  Doorbell* doorbell_ = nullptr;
  std::unique_ptr<ShmBoard> board_;  // when every rank shares memory with this one

  std::unique_ptr<FailureDetector> detector_;
#ifdef BCCL_HAVE_UCX
  std::unique_ptr<UcxEndpointFactory> ucx_;  // outlives every UCX connection (see destructor)
#endif
#ifdef BCCL_HAVE_VERBS
  std::unique_ptr<VerbsContext> verbs_;  // outlives every verbs connection (see destructor)
#endif

  std::atomic<bool> aborted_{false};
  std::atomic<bool> failed_{false};
  mutable std::mutex errorMu_;
  Status firstError_;
  std::string lastError_;

  uint32_t childSeq_ = 0;
  int spinMicros_ = 0;
  std::vector<char> onOtherCpu_;  // per rank: certainly never on this rank's CPU (placement.h)
  std::atomic<uint64_t> opsIssued_{0};
  std::atomic<uint64_t> nextTicket_{0};
  std::atomic<uint64_t> serving_{0};
  char* scratch_ = nullptr;
  size_t scratchBytes_ = 0;
};

}  // namespace bccl
