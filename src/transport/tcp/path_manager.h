// Brings failed paths back. Each communicator with multipath TCP has one: a listener of its own
// (not the communicator's, which membership changes accept on) and a thread that, for every
// path given up, reconnects it from the lower-ranked end with backoff, or accepts the
// reconnection on the higher-ranked end, authenticates it like any link of the communicator,
// and offers the socket to the connection, which adopts it on its next progress call.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "core/rendezvous.h"
#include "transport/tcp/multipath_connection.h"

namespace bccl {

class PathManager final : public PathReconnector {
 public:
  // `listenFd` (owned) accepts reconnections; `local[i]` is this rank's address for path i;
  // `peerPaths[r][i]` rank r's address for path i with the port of its own path listener.
  PathManager(int rank, const uint8_t* secret, uint64_t commId, int listenFd,
              std::vector<SockAddr> local, std::vector<std::vector<SockAddr>> peerPaths);
  ~PathManager() override;
  PathManager(const PathManager&) = delete;
  PathManager& operator=(const PathManager&) = delete;

  void attach(int peer, MultipathConnection* conn);
  void pathDown(int peer, int path, uint32_t generation) override;

 private:
  struct Attempt {
    uint32_t generation;  // the one the new socket gets
    int64_t nextNs;
    int backoffMs;
  };
  void run();
  void acceptOne();
  void connectOne(int peer, int path, Attempt* a);
  MultipathConnection* connection(int peer);

  const int rank_;
  uint8_t secret_[kSecretBytes];
  const uint64_t commId_;
  int listenFd_;
  int wakeFd_ = -1;
  const std::vector<SockAddr> local_;
  const std::vector<std::vector<SockAddr>> peerPaths_;
  std::mutex mu_;
  std::map<int, MultipathConnection*> conns_;
  std::map<std::pair<int, int>, Attempt> attempts_;  // (peer, path) this rank reconnects
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace bccl
