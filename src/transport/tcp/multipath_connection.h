// A connection to one peer over several TCP sockets ("paths"), e.g. one per network interface.
// Large messages are cut into chunks that the paths pull in proportion to what each delivers
// (chunk_scheduler.h); small ones go whole over the path that delivers first, at the cost of one
// sendmsg as on a single socket. A path that fails (reset, error, or no acknowledgement while
// another path of the same peer answers) is dropped with a WARN naming it and why; the chunks it
// held are resent over the others, and the path manager reconnects it in the background. Only
// when no path is left does the peer count as failed. The wire-independent halves live in
// transport/multipath/ (send_tracker, recv_assembly, path_rate): a verbs QP can be a path too.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "transport/multipath/path_rate.h"
#include "transport/multipath/recv_assembly.h"
#include "transport/multipath/send_tracker.h"
#include "transport/tcp/path_frame.h"
#include "transport/transport.h"

namespace bccl {

// Brings failed paths back (PathManager); called from the executor's thread.
class PathReconnector {
 public:
  virtual ~PathReconnector() = default;
  // Generation `generation` of path `path` to `peer` failed: offer a new socket for it
  // (MultipathConnection::offerPath) once one connects.
  virtual void pathDown(int peer, int path, uint32_t generation) = 0;
};

struct MultipathOptions {
  uint64_t chunkBytes = 512 * 1024;  // multiple of 64
  // Messages up to this are copied and complete when written: below it a copy costs less than
  // waiting a round trip for the acknowledgement (which larger messages do).
  uint64_t copyBytes = 64 * 1024;
  uint64_t minWindow = 2 * 1024 * 1024;
  uint64_t maxWindow = 32 * 1024 * 1024;
  int stallMs = 1000;  // no acknowledgement for this long, while another path answers
  int64_t rateTauNs = 100000000;
};

class MultipathConnection final : public Connection {
 public:
  // Takes ownership of `fds` (connected, authenticated; fds[i] is path i, generation 0).
  MultipathConnection(int peer, std::string peerName, const std::vector<int>& fds,
                      const MultipathOptions& options, PathReconnector* reconnector);
  ~MultipathConnection() override;

  int peer() const override { return peer_; }
  const char* kind() const override { return "tcp"; }
  Status postSend(const void* data, size_t bytes, uint64_t token) override;
  Status postRecv(const RecvTarget& target, size_t bytes, uint64_t token) override;
  Status progress(std::vector<uint64_t>* completed) override;
  bool hasPending() const override { return !sends_.empty() || assembly_.expecting(); }
  void addToWaitSet(WaitSet* set) const override;
  void dropPending() override;
  void sever() override;
  // Fault injection: shuts down the highest open path's socket (fails over, then reconnects).
  bool failOnePath() override;

  // A new socket for `path` (from the path manager's thread): adopted by the next progress()
  // if `generation` is newer than the path's current one, else closed.
  void offerPath(int path, uint32_t generation, int fd);
  int numPaths() const { return static_cast<int>(paths_.size()); }
  // Payload bytes written on a path so far (all its generations), and whether it is up: for
  // logs and tests.
  uint64_t pathBytesSent(int path) const { return paths_[static_cast<size_t>(path)]->bytesSent; }
  bool pathUp(int path) const { return paths_[static_cast<size_t>(path)]->up; }

 private:
  enum class Rx { kHeader, kPayload };
  struct Path {
    int index = 0;
    std::string name;  // "path 1 (10.0.1.1:4242 -> 10.0.1.2:5151)"
    int fd = -1;
    bool up = false;
    uint32_t generation = 0;
    // Writing: control frames, then at most one data frame at a time (the kernel's buffer is
    // the queue; a path takes the next chunk only when it has written the previous one).
    std::string ctrl;
    bool framing = false;  // a data frame is being written
    FrameHeader out;
    const char* payload = nullptr;
    uint64_t outWritten = 0;  // of header + payload
    ChunkRef chunk;
    bool blocked = false;  // the last write stopped on a full socket
    // Acknowledgements of the other direction.
    uint64_t consumed = 0;  // data frames read whole
    uint64_t ackSent = 0;   // the value the peer last got
    bool ackDue = false;
    // Reading.
    Rx rx = Rx::kHeader;
    FrameHeader in;
    size_t inHave = 0;
    RecvAssembly::Mode mode = RecvAssembly::Mode::kDiscard;
    uint64_t pos = 0;         // payload bytes read
    uint64_t skip = 0;        // leading bytes delivered by an earlier copy
    uint64_t deliverPos = 0;  // payload bytes delivered (reductions deliver whole elements)
    std::vector<char> stage;
    std::vector<char> bounce;
    size_t bounceFill = 0;
    // Health and measurement.
    PathFlight flight;
    PathRate rate;
    uint64_t acked = 0;      // the peer's cumulative acknowledgement
    int64_t progressNs = 0;  // last acknowledgement, or when it became busy
    int64_t heardNs = 0;     // last frame of any kind from the peer
    int64_t pingNs = 0;      // last request for an acknowledgement
    uint64_t bytesSent = 0;  // payload bytes, for the log
    int failures = 0;
    // The kernel's view of delivery (TCP_INFO), which feeds the rate and the window when
    // available: bytes written to the socket and acknowledged by the peer's TCP.
    bool kernelInfo = false;
    uint64_t wireWritten = 0;
    uint64_t wireAcked = 0;
    int64_t infoNs = 0;

    explicit Path(int64_t tauNs) : rate(tauNs) {}
  };

  void attach(Path& p, int fd, uint32_t generation);
  // Gives a path up: WARN, its chunks back to the send queue, peer told, reconnection asked.
  void failPath(Path& p, const std::string& why, bool tellPeer = true);
  void adoptOffers();
  // Reads every frame available on `p`. A path-level problem sets *why (the path fails); a
  // returned error fails the connection (the peers disagree about a message).
  Status readPath(Path& p, int64_t now, bool eager, std::vector<uint64_t>* completed,
                  std::string* why);
  Status readPayload(Path& p, std::vector<uint64_t>* completed, std::string* why, bool* blocked);
  void onHeader(Path& p, int64_t now, std::vector<uint64_t>* completed);
  void endFrame(Path& p, std::vector<uint64_t>* completed);
  Status pumpSends(int64_t now, std::vector<uint64_t>* completed);
  void startFrame(Path& p, const ChunkRef& c, int64_t now);
  // Writes what `p` has queued; false with *why set when the socket failed.
  bool flush(Path& p, std::vector<uint64_t>* completed, std::string* why);
  void queueControl(Path& p, uint8_t type, uint8_t flags, uint64_t offset, uint32_t generation);
  void checkStalls(int64_t now);
  void sampleDelivery(Path& p, int64_t now);
  uint64_t queued(const Path& p) const;
  int primary() const;  // the lowest path that is up
  bool worthReading(const Path& p, int64_t now) const;
  void tracePaths() const;
  void closeGracefully();
  int pathsUp() const;
  Status failedStatus() const;

  const int peer_;
  const std::string peerName_;
  const MultipathOptions opt_;
  PathReconnector* const reconnector_;
  std::vector<std::unique_ptr<Path>> paths_;
  SendTracker sends_;
  RecvAssembly assembly_;
  bool broken_ = false;
  bool peerLeft_ = false;  // it said goodbye: closing sockets are no failure
  std::string lastFailure_;
  int64_t nextStallCheckNs_ = 0;
  int64_t traceNs_ = 0;
  uint64_t pollCount_ = 0;

  // Set from other threads: a severed connection (fault injection) and sockets offered by the
  // path manager. fdMu_ also guards closing, so sever() never shuts a recycled descriptor.
  std::atomic<bool> severRequested_{false};
  std::atomic<bool> hasOffers_{false};
  mutable std::mutex fdMu_;
  struct Offer {
    int path;
    uint32_t generation;
    int fd;
  };
  std::vector<Offer> offers_;
};

}  // namespace bccl
