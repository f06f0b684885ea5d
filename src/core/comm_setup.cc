// Bringing a communicator up: rendezvous, then one connection per peer, shared memory to ranks
// on the same host and TCP to the others. Every step has the communicator's deadline.
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/bulk_copy.h"
#include "core/comm.h"
#include "core/logging.h"
#include "core/params.h"
#include "core/tuning.h"
#include "fault/failure_detector.h"
#include "topology/placement.h"
#include "topology/topology.h"
#include "transport/shm/shm_connection.h"
#include "transport/tcp/multipath_connection.h"
#include "transport/tcp/path_config.h"
#include "transport/tcp/path_manager.h"
#include "transport/tcp/tcp_connection.h"
#ifdef BCCL_HAVE_UCX
#include "transport/ucx/ucx_transport.h"
#endif

namespace bccl {
namespace {

const IntParam kShmSlotBytes("BCCL_SHM_SLOT_BYTES", 64 * 1024, "Bytes per shared-memory ring slot");
const IntParam kShmSlots("BCCL_SHM_SLOTS", 16, "Slots per shared-memory ring");
// 1 MiB: a large allgather or allreduce goes in rounds of one area each, and every round costs a
// synchronisation; with 2 and 4 ranks 1 MiB areas gave 1.2-1.4x the busbw of 256 KiB ones at 64-256
// MiB (8 ranks alike), while 4 MiB and more spill the two areas of every rank out of the L2s
// (docs/measurements/board-size-20261208.txt).
const IntParam kShmBoardBytes(
    "BCCL_SHM_BOARD_BYTES", 1024 * 1024,
    "Largest post of a 'direct' collective (all ranks share memory): e.g. an allreduce's "
    "input; 0 turns boards off. A multiple of 64, at most 16 MiB");
// Between processes the ring is the default even for large messages: process_vm_readv pins
// every page it reads and moves about half what memcpy does here (docs/measurements), while a
// copy into a ring slot and out of it stays in cache, so the ring's two copies cost less memory
// traffic and time than the one copy through the kernel.
const IntParam kShmCmaThreshold(
    "BCCL_SHM_CMA_THRESHOLD", 0,
    "Messages between processes of at least this many bytes are read straight from the sender "
    "with process_vm_readv instead of through the ring; 0: never");
const IntParam kShmThreadReadThreshold(
    "BCCL_SHM_THREAD_READ_THRESHOLD", 64 * 1024,
    "Messages between ranks that are threads of one process of at least this many bytes are "
    "read straight from the sender's buffer (one copy); 0: never");

const IntParam kSpinUs("BCCL_SPIN_US", -1,
                       "Microseconds an idle rank spins before yielding and sleeping; -1: 30 when "
                       "this machine has a core per local rank, else 0 (yield at once)");

const IntParam kHeartbeatMs("BCCL_HEARTBEAT_MS", 10,
                            "Period of the failure detector's heartbeats to its neighbours");
const IntParam kHeartbeatTimeoutMs("BCCL_HEARTBEAT_TIMEOUT_MS", 3000,
                                   "A neighbour silent this long is reported as unresponsive");

// A constant whose address each rank publishes, so peers can test whether they may read this
// process's memory with process_vm_readv.
const uint64_t kCmaProbe = 0xBCC1C0FFEE15600Dull;

// Closes a descriptor on every early return of set-up.
struct OwnedFd {
  int fd = -1;
  ~OwnedFd() {
    if (fd >= 0) close(fd);
  }
  int release() {
    int f = fd;
    fd = -1;
    return f;
  }
};

std::string segmentName(uint64_t commId, int rank) {
  char name[64];
  snprintf(name, sizeof(name), "/bccl-%016llx-%d", static_cast<unsigned long long>(commId), rank);
  return name;
}

}  // namespace

Status Communicator::setUp(const uint8_t* secret, int shmTag, const SockAddr& routeTarget,
                           const MembershipExchange& exchange) {
  const Deadline deadline = Deadline::afterMs(config_.timeoutMs);
  memcpy(secret_, secret, kSecretBytes);
  commId_ = digest64(secret_, kSecretBytes);
  bulkCopyKernel();  // times the copy routines now, once per process, not in a collective

  SockAddr any;
  any.storage.ss_family = static_cast<sa_family_t>(routeTarget.family());
  any.len = routeTarget.len;
  SockAddr bound;
  StatusOr<int> fd = listenTcp(any, &bound);
  if (!fd.isOk()) return fd.status().withContext("listener");
  listenFd_ = fd.value();

  PeerInfo mine;
  fillLocalIdentity(&mine);
  StatusOr<SockAddr> source = routeSourceAddress(routeTarget);
  if (!source.isOk()) return source.status();
  mine.listenAddr = source.value();
  mine.listenAddr.setPort(bound.port());
  // Multipath TCP: one address per path, a listener for reconnecting failed paths.
  StatusOr<std::vector<SockAddr>> pathAddrs = localPathAddresses(source.value());
  if (!pathAddrs.isOk()) return pathAddrs.status();
  mine.numPaths = static_cast<int32_t>(pathAddrs.value().size());
  for (int i = 0; i < mine.numPaths; ++i) {
    mine.pathAddrs[i] = pathAddrs.value()[static_cast<size_t>(i)];
    mine.pathAddrs[i].setPort(bound.port());
  }
  OwnedFd pathListener;
  MultipathOptions pathOptions;
  if (mine.numPaths > 1) {
    StatusOr<MultipathOptions> opts = multipathOptions();
    if (!opts.isOk()) return opts.status();
    pathOptions = opts.value();
    SockAddr pathBound;
    StatusOr<int> pfd = listenTcp(any, &pathBound);
    if (!pfd.isOk()) return pfd.status().withContext("path listener");
    pathListener.fd = pfd.value();
    mine.pathPort = pathBound.port();
  }
  mine.cmaProbeAddr = reinterpret_cast<uint64_t>(&kCmaProbe);
  mine.shmTag = shmTag;
  StatusOr<HostTopology> topo = discoverTopology(shmTag);
  if (!topo.isOk()) return topo.status();
  topology_ = topo.value();
  mine.numaNode = topology_.myNumaNode;
  mine.llcBytes = topology_.llcBytes;
  mine.cpus = topology_.pus;
  mine.boundCpu = boundCpu();
  mine.onlyCpu = onlyCpu();

  BCCL_RETURN_IF_ERROR(prepareUcx(&mine));
  BCCL_RETURN_IF_ERROR(prepareVerbs(&mine));
  if (config_.allowShm) {
    // Reserve the name before joining: once the membership is settled, every peer's exists.
    ownSegment_ = std::make_unique<ShmSegment>();
    BCCL_RETURN_IF_ERROR(ownSegment_->create(segmentName(commId_, shmTag)));
  }
  StatusOr<Membership> members = exchange(mine, deadline);
  if (!members.isOk()) return members.status();
  rank_ = members.value().rank;
  peers_ = std::move(members.value().peers);
  nranks_ = static_cast<int>(peers_.size());
  for (int r = 0; r < nranks_; ++r) peers_[r].rank = r;
  mine = peers_[rank_];
  onOtherCpu_ = ranksOnOtherCpus(peers_, rank_);
  ScopedLogRank tag(rank_);
  // Paths to a peer: as many as both ends offer (path i joins their addresses i).
  auto pathsWith = [this, &mine](int q) {
    return std::max(1, std::min(mine.numPaths, peers_[q].numPaths));
  };
  connections_.resize(nranks_);
  StatusOr<SelectionContext> selection = makeSelectionContext(peers_, config_);
  if (!selection.isOk()) return selection.status();
  selection_ = std::move(selection.value());
  if (!selection_.ringOrder.empty() && rank_ == 0) {
    std::string order;
    for (int r : selection_.ringOrder) order += (order.empty() ? "" : " ") + std::to_string(r);
    BCCL_INFO("ring order %s (host by host, then by bound CPU)", order.c_str());
  }

  std::vector<int> local, remote, viaUcx, viaVerbs;
  for (int r = 0; r < nranks_; ++r) {
    bool sameHost = peers_[r].hostHash == mine.hostHash;
    if (config_.allowShm && sameHost) {
      local.push_back(r);
    } else if (r != rank_) {
      std::string via = networkTransportFor(r);
      if (via.empty())
        return invalidArgument("no allowed transport reaches " + peerName(r) +
                               " (another host, and no network transport is allowed)");
      (via == "ucx" ? viaUcx : via == "verbs" ? viaVerbs : remote).push_back(r);
    }
  }
  spinMicros_ = static_cast<int>(kSpinUs.get());
  // Oversubscribed, a spinning rank holds the core its peer needs to make the progress it waits
  // for: 8 processes on 2 cores passing a barrier took 5 us with no spin and 9 us with 50 pauses
  // (about 1 us) before each yield. The same count the cost model divides rates by.
  if (spinMicros_ < 0) spinMicros_ = ranksPerCpuOn(peers_, mine.machineHash) <= 1 ? 30 : 0;
  if (local.size() > 1) {
    BCCL_RETURN_IF_ERROR(connectShmPeers(local));
  } else {
    ownSegment_.reset();
  }
  // One TCP link per remote peer for data, and control links to the failure-detection
  // neighbours (TCP even on one host: the kernel resets them the moment a process dies).
  std::vector<LinkWant> wants;
  for (int q : remote) wants.push_back({q, ConnKind::kData});
  for (int q : viaVerbs) wants.push_back({q, ConnKind::kVerbsSetup});
  const std::vector<int> neighbours = controlNeighbours(rank_, nranks_);
  for (int q : neighbours) wants.push_back({q, ConnKind::kControl});
  // Multipath TCP: the same links again for each further path (channel), control links too, so
  // that losing a path does not look like losing the neighbour.
  for (int q : remote)
    for (int c = 1; c < pathsWith(q); ++c) wants.push_back({q, ConnKind::kData, c});
  for (int q : neighbours)
    for (int c = 1; c < pathsWith(q); ++c) wants.push_back({q, ConnKind::kControl, c});
  std::vector<int> fds;
  Status linked = openLinks(wants, &fds);
  if (!linked.isOk()) {
    for (int f : fds)
      if (f >= 0) close(f);
    return linked;
  }
  Status verbsUp = connectVerbsPeers(wants, &fds);
  if (!verbsUp.isOk()) {
    for (int f : fds)
      if (f >= 0) close(f);
    return verbsUp;
  }
  BCCL_RETURN_IF_ERROR(connectUcxPeers(viaUcx));
  std::vector<FailureDetector::Link> controls;
  std::vector<std::vector<int>> dataFds(static_cast<size_t>(nranks_));
  for (size_t i = 0; i < wants.size(); ++i) {
    if (wants[i].kind == ConnKind::kData) {
      std::vector<int>& paths = dataFds[static_cast<size_t>(wants[i].peer)];
      paths.resize(std::max<size_t>(paths.size(), static_cast<size_t>(wants[i].channel) + 1), -1);
      paths[static_cast<size_t>(wants[i].channel)] = fds[i];
      applySocketBuffers(fds[i]);
    } else if (wants[i].kind == ConnKind::kControl) {
      controls.push_back({wants[i].peer, fds[i]});
    }
  }
  for (int q : remote) {
    const std::vector<int>& paths = dataFds[static_cast<size_t>(q)];
    if (paths.size() == 1) {
      connections_[q] = std::make_unique<TcpConnection>(q, paths[0], peerName(q));
      continue;
    }
    if (pathManager_ == nullptr) {
      std::vector<SockAddr> local(mine.pathAddrs, mine.pathAddrs + mine.numPaths);
      std::vector<std::vector<SockAddr>> theirs(static_cast<size_t>(nranks_));
      for (int r = 0; r < nranks_; ++r) {
        const PeerInfo& p = peers_[r];
        for (int c = 0; c < p.numPaths && p.pathPort > 0; ++c) {
          theirs[static_cast<size_t>(r)].push_back(p.pathAddrs[c]);
          theirs[static_cast<size_t>(r)].back().setPort(p.pathPort);
        }
      }
      pathManager_ = std::make_unique<PathManager>(rank_, secret_, commId_, pathListener.release(),
                                                   std::move(local), std::move(theirs));
    }
    auto conn = std::make_unique<MultipathConnection>(q, peerName(q), paths, pathOptions,
                                                      pathManager_.get());
    pathManager_->attach(q, conn.get());
    connections_[q] = std::move(conn);
  }
  std::vector<std::string> names;
  for (int r = 0; r < nranks_; ++r) names.push_back(peerName(r));
  detector_ = std::make_unique<FailureDetector>(
      rank_, std::move(names), std::move(controls), static_cast<int>(kHeartbeatMs.get()),
      static_cast<int>(kHeartbeatTimeoutMs.get()),
      [this](int rank, const std::string& message) { onPeerFailed(rank, message); });
  BCCL_INFO(
      "communicator ready: rank %d of %d, %zu shm peers, %zu tcp peers, %zu ucx peers, %zu verbs "
      "peers, listening on %s",
      rank_, nranks_, local.empty() ? 0 : local.size() - 1, remote.size(), viaUcx.size(),
      viaVerbs.size(), mine.listenAddr.toString().c_str());
  return Status::ok();
}

Status Communicator::prepareUcx(PeerInfo* mine) {
  if (std::find(config_.network.begin(), config_.network.end(), "ucx") == config_.network.end())
    return Status::ok();
#ifdef BCCL_HAVE_UCX
  StatusOr<std::unique_ptr<UcxEndpointFactory>> ucx = UcxEndpointFactory::create();
  if (!ucx.isOk()) return ucx.status().withContext("ucx transport");
  ucx_ = std::move(ucx.value());
  const std::string& address = ucx_->workerAddress();
  if (address.size() > sizeof(mine->ucxAddress))
    return internalError("UCX worker address of " + std::to_string(address.size()) +
                         " bytes does not fit");
  memcpy(mine->ucxAddress, address.data(), address.size());
  mine->ucxAddressBytes = static_cast<uint32_t>(address.size());
  return Status::ok();
#else
  (void)mine;
  return invalidArgument("transport not available: built without UCX");
#endif
}

std::string Communicator::networkTransportFor(int peer) const {
  if (config_.automatic && verbsReaches(peer)) return "verbs";
  for (const std::string& t : config_.network) {
    if (t == "verbs" && verbsReaches(peer)) return t;
    if (t == "tcp") return t;
    if (t == "ucx" && peers_[peer].ucxAddressBytes > 0 && peers_[rank_].ucxAddressBytes > 0)
      return t;
  }
  return "";
}

Status Communicator::connectUcxPeers(const std::vector<int>& peers) {
#ifdef BCCL_HAVE_UCX
  for (int q : peers) {
    std::string address(peers_[q].ucxAddress, peers_[q].ucxAddressBytes);
    auto conn = ucx_->connect(rank_, q, address, peerName(q));
    if (!conn.isOk()) return conn.status().withContext("ucx connection to " + peerName(q));
    connections_[q] = std::move(conn.value());
  }
  return Status::ok();
#else
  return peers.empty() ? Status::ok() : internalError("ucx requested in a build without UCX");
#endif
}

Status Communicator::connectShmPeers(const std::vector<int>& local) {
  const Deadline deadline = Deadline::afterMs(config_.timeoutMs);
  const int64_t slotBytes = kShmSlotBytes.get(), slots = kShmSlots.get();
  const int64_t boardBytes = kShmBoardBytes.get();
  if (slotBytes < 64 || slotBytes % 64 != 0 || slots < 2)
    return invalidArgument("BCCL_SHM_SLOT_BYTES must be a multiple of 64 and BCCL_SHM_SLOTS >= 2");
  if (boardBytes < 0 || boardBytes % 64 != 0 || boardBytes > (16 << 20))
    return invalidArgument("BCCL_SHM_BOARD_BYTES must be a multiple of 64 in 0..16777216");
  ShmGeometry geo{static_cast<size_t>(slotBytes), static_cast<size_t>(slots), local.size(),
                  static_cast<size_t>(boardBytes)};
  auto indexOf = [&local](int r) {
    return static_cast<size_t>(std::find(local.begin(), local.end(), r) - local.begin());
  };
  const size_t me = indexOf(rank_);
  BCCL_RETURN_IF_ERROR(ownSegment_->allocate(geo.segmentBytes()));
  char* mySeg = ownSegment_->data();
  doorbell_ = ShmGeometry::doorbell(mySeg);
  ShmGeometry::header(mySeg)->ready.store(kShmReadyMagic, std::memory_order_release);

  const int64_t cmaThreshold = kShmCmaThreshold.get();
  const int64_t threadReadThreshold = kShmThreadReadThreshold.get();
  std::vector<char*> segmentOfRank(nranks_, nullptr);
  segmentOfRank[rank_] = mySeg;
  for (int q : local) {
    if (q == rank_) continue;
    auto seg = std::make_unique<ShmSegment>();
    BCCL_RETURN_IF_ERROR(
        seg->open(segmentName(commId_, peers_[q].shmTag), geo.segmentBytes(), deadline, &aborted_)
            .withContext("shared memory of " + peerName(q)));
    char* peerSeg = seg->data();
    segmentOfRank[q] = peerSeg;
    while (ShmGeometry::header(peerSeg)->ready.load(std::memory_order_acquire) != kShmReadyMagic) {
      if (deadline.expired())
        return timeoutError(peerName(q) + " never finished its shared memory");
      usleep(200);
    }
    const bool samePid = peers_[q].pid == peers_[rank_].pid;
    const int64_t directThreshold = samePid ? threadReadThreshold : cmaThreshold;
    // Probed only when it would be used: the probe is a system call per local peer at init.
    const bool directReads =
        directThreshold > 0 &&
        (samePid ||
         canReadProcess(peers_[q].pid, reinterpret_cast<const void*>(peers_[q].cmaProbeAddr),
                        &kCmaProbe, sizeof(kCmaProbe)));
    if (directThreshold > 0 && !directReads)
      BCCL_INFO("cannot read %s's memory directly: shm uses copies", peerName(q).c_str());
    geo.ring(mySeg, indexOf(q))->receiverCanReadSender.store(directReads ? 1 : 0);
    ShmEndpoints ends{geo.ring(peerSeg, me),
                      ShmGeometry::doorbell(peerSeg),
                      geo.ring(mySeg, indexOf(q)),
                      doorbell_,
                      static_cast<pid_t>(peers_[q].pid),
                      samePid};
    size_t threshold = directReads ? static_cast<size_t>(directThreshold) : SIZE_MAX;
    connections_[q] = std::make_unique<ShmConnection>(q, peerName(q), geo, ends, threshold);
    ShmGeometry::header(peerSeg)->attached.fetch_add(1);
    peerSegments_.push_back(std::move(seg));
  }
  // Once every local peer has mapped my segment its name can go: nothing leaks if we crash.
  while (ShmGeometry::header(mySeg)->attached.load() < local.size() - 1) {
    if (aborted_.load()) return remoteError("aborted during shared-memory set-up");
    if (deadline.expired())
      return timeoutError("local peers did not map this rank's shared memory in time");
    usleep(200);
  }
  ownSegment_->unlink();
  selection_.allShm = local.size() == static_cast<size_t>(nranks_);
  if (local.size() == static_cast<size_t>(nranks_) && boardBytes > 0) {
    board_ = std::make_unique<ShmBoard>(rank_, std::move(segmentOfRank),
                                        static_cast<size_t>(boardBytes));
    selection_.boardBytes = static_cast<size_t>(boardBytes);
  }
  return Status::ok();
}

Status Communicator::openLinks(const std::vector<LinkWant>& wants, std::vector<int>* fds) {
  const Deadline deadline = Deadline::afterMs(config_.timeoutMs);
  fds->assign(wants.size(), -1);
  Hello hello;
  hello.magic = kHelloMagic;
  memcpy(hello.secret, secret_, kSecretBytes);
  hello.commId = commId_;
  hello.rank = rank_;
  hello.nranks = nranks_;
  // Connect to higher ranks, accept lower ones: connect() completes in the peer's backlog, so
  // the order cannot deadlock.
  size_t expected = 0;
  for (size_t i = 0; i < wants.size(); ++i) {
    const LinkWant& w = wants[i];
    if (w.peer < rank_) {
      ++expected;
      continue;
    }
    // Path c joins this rank's address c to the peer's address c (one path: as before).
    const PeerInfo& them = peers_[w.peer];
    const PeerInfo& me = peers_[rank_];
    const bool multi = std::min(me.numPaths, them.numPaths) > 1;
    const SockAddr& to = multi ? them.pathAddrs[w.channel] : them.listenAddr;
    StatusOr<int> fd =
        connectTcp(to, deadline, &aborted_, multi ? &me.pathAddrs[w.channel] : nullptr);
    if (!fd.isOk()) return fd.status().withContext("connecting to " + peerName(w.peer));
    (*fds)[i] = fd.value();
    hello.kind = w.kind;
    hello.channel = w.channel;
    Status st = sendAll(fd.value(), &hello, sizeof(hello), deadline, &aborted_);
    if (!st.isOk()) return st.withContext("greeting " + peerName(w.peer));
  }
  while (expected > 0) {
    StatusOr<int> fd = acceptTcp(listenFd_, deadline, &aborted_);
    if (!fd.isOk()) return fd.status().withContext("waiting for lower-ranked peers to connect");
    Hello h;
    Status st = recvAll(fd.value(), &h, sizeof(h),
                        Deadline::afterMs(std::min(5000, config_.timeoutMs)), &aborted_);
    size_t slot = wants.size();
    if (st.isOk() && h.magic == kHelloMagic && secretMatches(h, secret_) && h.commId == commId_)
      for (size_t i = 0; i < wants.size(); ++i)
        if (wants[i].peer == h.rank && wants[i].kind == h.kind && wants[i].channel == h.channel &&
            wants[i].peer < rank_ && (*fds)[i] < 0)
          slot = i;
    if (slot == wants.size()) {
      BCCL_WARN("dropped a connection that is not a peer of this communicator");
      close(fd.value());
      continue;
    }
    (*fds)[slot] = fd.value();
    --expected;
  }
  return Status::ok();
}

}  // namespace bccl
