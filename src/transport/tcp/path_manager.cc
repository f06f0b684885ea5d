#include "transport/tcp/path_manager.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "core/logging.h"
#include "core/socket.h"
#include "transport/tcp/path_config.h"

namespace bccl {
namespace {

// A reconnection that does not connect within this is retried later.
constexpr int kConnectMs = 1000;
constexpr int kFirstBackoffMs = 100;
constexpr int kMaxBackoffMs = 2000;
constexpr int kIdleSliceMs = 100;

struct PathHello {
  uint32_t path;
  uint32_t generation;
};

}  // namespace

PathManager::PathManager(int rank, const uint8_t* secret, uint64_t commId, int listenFd,
                         std::vector<SockAddr> local, std::vector<std::vector<SockAddr>> peerPaths)
    : rank_(rank),
      commId_(commId),
      listenFd_(listenFd),
      local_(std::move(local)),
      peerPaths_(std::move(peerPaths)) {
  memcpy(secret_, secret, kSecretBytes);
  wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  thread_ = std::thread([this] { run(); });
}

PathManager::~PathManager() {
  stop_.store(true);
  uint64_t one = 1;
  ssize_t ignored = write(wakeFd_, &one, sizeof(one));
  (void)ignored;
  if (thread_.joinable()) thread_.join();
  closeFd(&listenFd_);
  closeFd(&wakeFd_);
}

void PathManager::attach(int peer, MultipathConnection* conn) {
  std::lock_guard<std::mutex> lock(mu_);
  conns_[peer] = conn;
}

MultipathConnection* PathManager::connection(int peer) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = conns_.find(peer);
  return it == conns_.end() ? nullptr : it->second;
}

void PathManager::pathDown(int peer, int path, uint32_t generation) {
  // The lower rank reconnects, the higher one accepts: never two new sockets for one path.
  if (rank_ > peer) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Attempt& a = attempts_[{peer, path}];
    a.generation = std::max(a.generation, generation + 1);
    a.nextNs = nowNs() + static_cast<int64_t>(kFirstBackoffMs) * 1000000;
    a.backoffMs = kFirstBackoffMs;
  }
  uint64_t one = 1;
  ssize_t ignored = write(wakeFd_, &one, sizeof(one));
  (void)ignored;
}

void PathManager::run() {
  ScopedLogRank tag(rank_);
  while (!stop_.load()) {
    int64_t now = nowNs();
    int64_t waitNs = static_cast<int64_t>(kIdleSliceMs) * 1000000;
    std::vector<std::pair<std::pair<int, int>, Attempt>> due;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& kv : attempts_) {
        if (kv.second.nextNs <= now)
          due.push_back(kv);
        else
          waitNs = std::min(waitNs, kv.second.nextNs - now);
      }
    }
    for (auto& d : due) {
      if (stop_.load()) return;
      connectOne(d.first.first, d.first.second, &d.second);
      std::lock_guard<std::mutex> lock(mu_);
      auto it = attempts_.find(d.first);
      if (it == attempts_.end()) continue;
      if (d.second.nextNs < 0) {
        // Connected; unless a newer failure came meanwhile, this path needs nothing more.
        if (it->second.generation == d.second.generation) attempts_.erase(it);
      } else if (it->second.generation == d.second.generation) {
        it->second = d.second;
      }
    }
    if (!due.empty()) continue;
    pollfd fds[2] = {{wakeFd_, POLLIN, 0}, {listenFd_, POLLIN, 0}};
    int ms = static_cast<int>(std::max<int64_t>(1, waitNs / 1000000));
    if (poll(fds, 2, ms) <= 0) continue;
    if (fds[0].revents != 0) {
      uint64_t v;
      ssize_t ignored = read(wakeFd_, &v, sizeof(v));
      (void)ignored;
    }
    if (fds[1].revents != 0) acceptOne();
  }
}

void PathManager::connectOne(int peer, int path, Attempt* a) {
  MultipathConnection* conn = connection(peer);
  const size_t p = static_cast<size_t>(path);
  if (conn == nullptr || p >= local_.size() || static_cast<size_t>(peer) >= peerPaths_.size() ||
      p >= peerPaths_[static_cast<size_t>(peer)].size()) {
    a->nextNs = -1;  // nothing to reconnect
    return;
  }
  const SockAddr& to = peerPaths_[static_cast<size_t>(peer)][p];
  const Deadline deadline = Deadline::afterMs(kConnectMs);
  StatusOr<int> fd = connectTcp(to, deadline, &stop_, &local_[p]);
  Status st = fd.isOk() ? Status::ok() : fd.status();
  if (st.isOk()) {
    Hello h;
    h.magic = kHelloMagic;
    h.kind = ConnKind::kData;
    memcpy(h.secret, secret_, kSecretBytes);
    h.commId = commId_;
    h.rank = rank_;
    h.channel = path;
    h.payloadBytes = sizeof(PathHello);
    PathHello ph{static_cast<uint32_t>(path), a->generation};
    st = sendAll(fd.value(), &h, sizeof(h), deadline, &stop_);
    if (st.isOk()) st = sendAll(fd.value(), &ph, sizeof(ph), deadline, &stop_);
    if (!st.isOk()) close(fd.value());
  }
  if (!st.isOk()) {
    BCCL_TRACE("reconnecting path %d to rank %d: %s", path, peer, st.message().c_str());
    a->nextNs = nowNs() + static_cast<int64_t>(a->backoffMs) * 1000000;
    a->backoffMs = std::min(kMaxBackoffMs, a->backoffMs * 2);
    return;
  }
  applySocketBuffers(fd.value());
  conn->offerPath(path, a->generation, fd.value());
  a->nextNs = -1;
}

void PathManager::acceptOne() {
  StatusOr<int> fd = acceptTcp(listenFd_, Deadline::afterMs(kIdleSliceMs), &stop_);
  if (!fd.isOk()) return;
  Hello h;
  PathHello ph{};
  const Deadline deadline = Deadline::afterMs(kConnectMs);
  Status st = recvAll(fd.value(), &h, sizeof(h), deadline, &stop_);
  bool valid = st.isOk() && h.magic == kHelloMagic && secretMatches(h, secret_) &&
               h.commId == commId_ && h.kind == ConnKind::kData && h.rank >= 0 && h.rank < rank_ &&
               h.payloadBytes == sizeof(PathHello);
  if (valid) valid = recvAll(fd.value(), &ph, sizeof(ph), deadline, &stop_).isOk();
  MultipathConnection* conn = valid ? connection(h.rank) : nullptr;
  if (conn == nullptr || static_cast<int>(ph.path) != h.channel ||
      static_cast<int>(ph.path) >= conn->numPaths()) {
    BCCL_WARN("dropped a path reconnection that is not from a peer of this communicator");
    close(fd.value());
    return;
  }
  applySocketBuffers(fd.value());
  conn->offerPath(static_cast<int>(ph.path), ph.generation, fd.value());
}

}  // namespace bccl
