// Rank-failure detection and its spreading (revoke). Each rank keeps control connections to a
// few neighbours, ranks r +- 2^k: a neighbour's death resets the connection at once, a stopped
// or cut-off neighbour falls silent and misses heartbeats. With several network paths there is
// a control connection per path, and a neighbour counts as failed only when every one of them
// closed or fell silent: losing one path is the multipath layer's business, not a rank failure.
// Whatever a rank learns, it floods to its neighbours, which reach everyone in O(log n) hops even
// with several ranks gone, so every survivor learns of a failure in milliseconds without any rank
// watching all the others.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bccl {

// r +- 2^k (mod n), without r and without repeats.
std::vector<int> controlNeighbours(int rank, int nranks);

class FailureDetector {
 public:
  struct Link {
    int peer;
    int fd;  // connected, authenticated control socket (owned from now on); several per peer
  };
  // Called once per failed rank with a message that names it, from any thread.
  using FailureCallback = std::function<void(int rank, const std::string& message)>;

  FailureDetector(int rank, std::vector<std::string> names, std::vector<Link> links,
                  int heartbeatMs, int silenceMs, FailureCallback onFailure);
  ~FailureDetector();  // says goodbye to the neighbours and stops
  FailureDetector(const FailureDetector&) = delete;
  FailureDetector& operator=(const FailureDetector&) = delete;

  // A failure found by this rank's own operations; recorded and spread once. kRevokedComm as
  // the rank revokes the whole communicator (bcclCommRevoke).
  static constexpr int kRevokedComm = -1;
  void report(int rank, const std::string& message);
  std::vector<int> failedRanks() const;
  // Stops the thread, after which no callback runs. With a goodbye, neighbours take the closing
  // connections as a normal exit; without (abort), as this rank's failure.
  void shutdown(bool sayGoodbye);
  // Stops the thread and shuts the control sockets down at once, as a lost network would.
  void sever();

 private:
  struct LinkEnd {
    int fd = -1;
    bool open = true;
    int64_t lastHeardNs = 0;
    std::string inbox;   // partial incoming messages
    std::string outbox;  // partial outgoing bytes (the socket was full)
  };
  struct Neighbour {
    int peer;
    std::vector<LinkEnd> links;  // one per path
    bool departed = false;       // said goodbye: its closing is not a failure
    bool anyOpen() const;
  };

  void run();
  // Records a failure; returns false if it was already known.
  bool declare(int rank, const std::string& message);
  void sendToAll(uint32_t type, int rank, const std::string& text);
  void sendTo(LinkEnd& l, const std::string& bytes);
  void onReadable(Neighbour& n, LinkEnd& l, int64_t now);
  void close(LinkEnd& l);

  const int rank_;
  const std::vector<std::string> names_;
  const int heartbeatMs_;
  const int silenceMs_;
  FailureCallback onFailure_;
  std::vector<Neighbour> neighbours_;
  int wakeFd_ = -1;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;  // failed_
  std::mutex sendMu_;      // neighbours' sockets and outboxes, written from several threads
  std::vector<int> failed_;
  std::thread thread_;
};

}  // namespace bccl
