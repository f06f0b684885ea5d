// Communicator lifetime and the services it gives the executor (errors, abort, liveness,
// scratch, turns). Connection set-up lives in comm_setup.cc.
#include "core/comm.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/calibrate.h"
#include "core/logging.h"
#ifdef BCCL_HAVE_UCX
#include "transport/ucx/ucx_transport.h"
#endif
#ifdef BCCL_HAVE_VERBS
#include "transport/verbs/verbs_context.h"
#endif

namespace bccl {

Communicator::Communicator(const CommConfig& config) : config_(config) {}

StatusOr<std::unique_ptr<Communicator>> Communicator::createFromExchange(
    const uint8_t* secret, int shmTag, const SockAddr& reachable, const CommConfig& config,
    const MembershipExchange& exchange, const SelectionContext* linkCostsFrom) {
  std::unique_ptr<Communicator> comm(new Communicator(config));
  comm->wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (comm->wakeFd_ < 0) return errnoStatus("eventfd", errno);
  Status st = comm->setUp(secret, shmTag, reachable, exchange);
  if (!st.isOk()) return st;
  if (linkCostsFrom != nullptr) {
    copyLinkCosts(*linkCostsFrom, &comm->selection_);
  } else if (calibrationWanted()) {
    st = calibrateLinkCosts(comm.get(), &comm->selection_);
    if (!st.isOk()) return st;
    BCCL_INFO("link costs %s", comm->selection_.source.c_str());
  }
  return comm;
}

StatusOr<std::unique_ptr<Communicator>> Communicator::create(int nranks, const UniqueIdData& id,
                                                             int rank, const CommConfig& config) {
  const AbortFlag* noAbort = nullptr;
  auto viaRendezvous = [&](const PeerInfo& mine, Deadline deadline) -> StatusOr<Membership> {
    PeerInfo me = mine;
    me.rank = rank;
    StatusOr<std::vector<PeerInfo>> all = rendezvousJoin(id, rank, nranks, me, deadline, noAbort);
    if (!all.isOk()) return all.status();
    Membership m;
    m.rank = rank;
    m.peers = std::move(all.value());
    return m;
  };
  return createFromExchange(id.secret, rank, id.rendezvous, config, viaRendezvous);
}

void Communicator::revoke() {
  const std::string why = "communicator revoked by " + peerName(rank_);
  recordError(remoteError(why));
  if (detector_ != nullptr) detector_->report(FailureDetector::kRevokedComm, why);
  wake();
}

void Communicator::dropConnections() {
  // Sockets are shut down, not freed: another thread may be using these objects right now.
  if (detector_ != nullptr) detector_->sever();
  for (auto& c : connections_)
    if (c != nullptr) c->sever();
  recordError(remoteError("this rank's connections were dropped (fault injection)"));
  wake();
}

int Communicator::failOnePathEach() {
  int broken = 0;
  for (auto& c : connections_)
    if (c != nullptr && c->failOnePath()) ++broken;
  return broken;
}

void Communicator::markFailed(int rank, const std::string& why) {
  if (detector_ != nullptr) detector_->report(rank, why);
}

Communicator::~Communicator() {
  // A normal exit says goodbye, so neighbours do not take it for a crash; an aborted one does
  // not, so they treat this rank as failed and stop waiting for it.
  // Stopped before it is freed: its thread calls back into this object until then.
  if (detector_ != nullptr) detector_->shutdown(!aborted_.load());
  detector_.reset();
  pathManager_.reset();  // its thread offers sockets to the connections: stopped first
  connections_.clear();
#ifdef BCCL_HAVE_UCX
  ucx_.reset();  // after its connections
#endif
#ifdef BCCL_HAVE_VERBS
  verbs_.reset();  // after its connections
#endif
  closeFd(&listenFd_);
  closeFd(&wakeFd_);
  free(scratch_);
}

Connection* Communicator::connection(int peer) {
  if (peer < 0 || peer >= nranks_) return nullptr;
  return connections_[peer].get();
}

std::string Communicator::peerName(int peer) const {
  if (peer < 0 || peer >= static_cast<int>(peers_.size())) return "rank " + std::to_string(peer);
  const PeerInfo& p = peers_[peer];
  return "rank " + std::to_string(peer) + " (host " + p.hostName + ", pid " +
         std::to_string(p.pid) + ")";
}

Status Communicator::health() const {
  if (aborted_.load()) return remoteError("communicator was aborted (bcclCommAbort)");
  if (!failed_.load()) return Status::ok();
  std::lock_guard<std::mutex> lock(errorMu_);
  return firstError_;
}

void Communicator::recordError(const Status& status) {
  if (status.isOk()) return;
  {
    std::lock_guard<std::mutex> lock(errorMu_);
    if (firstError_.isOk()) {
      firstError_ = status;
      lastError_ = status.message();
      BCCL_WARN("communicator failed: %s", status.message().c_str());
    }
    failed_.store(true);
  }
  // A peer's failure found by an operation here is news for every other rank too.
  if (status.failedPeer() >= 0 && detector_ != nullptr)
    detector_->report(status.failedPeer(), status.message());
}

void Communicator::onPeerFailed(int rank, const std::string& message) {
  BCCL_WARN("%s", message.c_str());
  recordError(remoteError(message).blaming(rank));
  wake();
}

std::vector<int> Communicator::failedRanks() const {
  return detector_ != nullptr ? detector_->failedRanks() : std::vector<int>{};
}

void Communicator::wake() {
  uint64_t one = 1;
  ssize_t ignored = write(wakeFd_, &one, sizeof(one));
  (void)ignored;
  if (doorbell_ != nullptr) ringDoorbell(doorbell_);
  if (board_ != nullptr) ringDoorbell(board_->groupBell());
}

Status Communicator::asyncError() const {
  std::lock_guard<std::mutex> lock(errorMu_);
  return firstError_;
}

void Communicator::abort() {
  aborted_.store(true);
  wake();
}

void Communicator::addWakeHandles(WaitSet* set) {
  set->addFd(wakeFd_, POLLIN);
  if (doorbell_ != nullptr) set->addDoorbell(doorbell_);
}

bool Communicator::sharesMachineWith(int peer) const {
  return peers_[peer].machineHash == peers_[rank_].machineHash;
}

Status Communicator::checkPeerAlive(int peer) {
  const PeerInfo& p = peers_[peer];
  // Only a process on this machine can be looked up; remote deaths surface as closed sockets.
  if (!sharesMachineWith(peer) || p.pid == peers_[rank_].pid) return Status::ok();
  std::ifstream stat("/proc/" + std::to_string(p.pid) + "/stat");
  std::string line;
  bool gone = !std::getline(stat, line);
  if (!gone) {
    size_t close = line.rfind(')');
    std::istringstream rest(close == std::string::npos ? "" : line.substr(close + 2));
    std::string field, state;
    uint64_t start = 0;
    for (int i = 3; i <= 22 && rest >> field; ++i) {
      if (i == 3) state = field;
      if (i == 22) start = strtoull(field.c_str(), nullptr, 10);
    }
    gone = state == "Z" || state == "X" || start != p.procStartTime;
  }
  if (gone) return remoteError(peerName(peer) + " died: its process is gone").blaming(peer);
  return Status::ok();
}

char* Communicator::scratch(size_t bytes) {
  if (bytes <= scratchBytes_) return scratch_;
  free(scratch_);
  scratch_ = nullptr;
  scratchBytes_ = 0;
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes) != 0) return nullptr;
  scratch_ = static_cast<char*>(p);
  scratchBytes_ = bytes;
  return scratch_;
}

void Communicator::setLastError(const std::string& message) {
  std::lock_guard<std::mutex> lock(errorMu_);
  lastError_ = message;
}

const char* Communicator::lastError() {
  std::lock_guard<std::mutex> lock(errorMu_);
  // The pointer stays valid until the next error on this communicator, as NCCL's does.
  return lastError_.c_str();
}

}  // namespace bccl
