#include "fault/failure_detector.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/deadline.h"
#include "core/logging.h"

namespace bccl {
namespace {

constexpr uint32_t kControlMagic = 0xBCC1FA17u;
enum : uint32_t { kHeartbeat = 1, kRevoke = 2, kGoodbye = 3 };

// Fixed-size records keep framing trivial; the text names the failed rank and who saw it.
struct ControlMsg {
  uint32_t magic;
  uint32_t type;
  int32_t rank;
  uint32_t textBytes;
  char text[240];
};

std::string encode(uint32_t type, int rank, const std::string& text) {
  ControlMsg m{};
  m.magic = kControlMagic;
  m.type = type;
  m.rank = rank;
  m.textBytes = static_cast<uint32_t>(std::min(text.size(), sizeof(m.text)));
  memcpy(m.text, text.data(), m.textBytes);
  return std::string(reinterpret_cast<const char*>(&m), sizeof(m));
}

}  // namespace

std::vector<int> controlNeighbours(int rank, int nranks) {
  std::vector<int> out;
  for (long step = 1; step < nranks; step *= 2)
    for (long sign : {1L, -1L}) {
      int q = static_cast<int>(((rank + sign * step) % nranks + nranks) % nranks);
      if (q != rank && std::find(out.begin(), out.end(), q) == out.end()) out.push_back(q);
    }
  return out;
}

FailureDetector::FailureDetector(int rank, std::vector<std::string> names, std::vector<Link> links,
                                 int heartbeatMs, int silenceMs, FailureCallback onFailure)
    : rank_(rank),
      names_(std::move(names)),
      heartbeatMs_(std::max(1, heartbeatMs)),
      silenceMs_(std::max(silenceMs, 2 * heartbeatMs)),
      onFailure_(std::move(onFailure)) {
  const int64_t now = nowNs();
  for (const Link& l : links) {
    Neighbour n;
    n.peer = l.peer;
    n.fd = l.fd;
    n.lastHeardNs = now;
    neighbours_.push_back(std::move(n));
  }
  wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  thread_ = std::thread([this] { run(); });
}

FailureDetector::~FailureDetector() {
  shutdown(true);
  for (Neighbour& n : neighbours_) close(n);
  if (wakeFd_ >= 0) ::close(wakeFd_);
}

void FailureDetector::shutdown(bool sayGoodbye) {
  if (stop_.load()) return;
  if (sayGoodbye) sendToAll(kGoodbye, rank_, "");
  if (stop_.exchange(true)) return;
  uint64_t one = 1;
  ssize_t ignored = write(wakeFd_, &one, sizeof(one));
  (void)ignored;
  if (thread_.joinable()) thread_.join();
}

void FailureDetector::sever() {
  shutdown(false);
  std::lock_guard<std::mutex> lock(sendMu_);
  for (Neighbour& n : neighbours_)
    if (n.fd >= 0) ::shutdown(n.fd, SHUT_RDWR);
}

std::vector<int> FailureDetector::failedRanks() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int> out;
  for (int r : failed_)
    if (r != kRevokedComm) out.push_back(r);
  std::sort(out.begin(), out.end());
  return out;
}

void FailureDetector::report(int rank, const std::string& message) {
  if (declare(rank, message)) sendToAll(kRevoke, rank, message);
}

bool FailureDetector::declare(int rank, const std::string& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (std::find(failed_.begin(), failed_.end(), rank) != failed_.end()) return false;
    failed_.push_back(rank);
  }
  onFailure_(rank, message);
  return true;
}

void FailureDetector::sendTo(Neighbour& n, const std::string& bytes) {
  if (!n.open) return;
  n.outbox += bytes;
  while (!n.outbox.empty()) {
    ssize_t sent = send(n.fd, n.outbox.data(), n.outbox.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0) {
      n.outbox.erase(0, static_cast<size_t>(sent));
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    break;  // full (a stopped peer) or broken: the reader side notices the latter
  }
  // A silent neighbour must not make us hoard heartbeats: keep at most a few messages queued.
  if (n.outbox.size() > 16 * sizeof(ControlMsg))
    n.outbox.resize(n.outbox.size() % sizeof(ControlMsg));
}

void FailureDetector::sendToAll(uint32_t type, int rank, const std::string& text) {
  const std::string bytes = encode(type, rank, text);
  std::lock_guard<std::mutex> lock(sendMu_);
  for (Neighbour& n : neighbours_)
    if (n.peer != rank || type != kRevoke) sendTo(n, bytes);
}

void FailureDetector::close(Neighbour& n) {
  if (n.fd >= 0) ::close(n.fd);
  n.fd = -1;
  n.open = false;
}

void FailureDetector::onReadable(Neighbour& n, int64_t now) {
  char buf[4096];
  bool closed = false;
  std::string why;
  for (;;) {
    ssize_t got = recv(n.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (got > 0) {
      n.inbox.append(buf, static_cast<size_t>(got));
      n.lastHeardNs = now;
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    closed = true;
    why = got == 0 ? "its connection closed"
                   : std::string("its connection failed (") + strerror(errno) + ")";
    break;
  }
  // Messages first: a goodbye that arrived together with the close makes the close normal.
  while (n.inbox.size() >= sizeof(ControlMsg)) {
    ControlMsg m;
    memcpy(&m, n.inbox.data(), sizeof(m));
    n.inbox.erase(0, sizeof(m));
    if (m.magic != kControlMagic) continue;
    if (m.type == kGoodbye) n.departed = true;
    if (m.type == kRevoke && m.rank >= kRevokedComm && m.rank < static_cast<int>(names_.size()))
      report(m.rank, std::string(m.text, std::min<size_t>(m.textBytes, sizeof(m.text))));
  }
  if (!closed) return;
  {
    std::lock_guard<std::mutex> lock(sendMu_);
    close(n);
  }
  if (!n.departed)
    report(n.peer, names_[n.peer] + " failed: " + why +
                       ", the process exited or crashed (seen by rank " + std::to_string(rank_) +
                       ")");
}

void FailureDetector::run() {
  ScopedLogRank tag(rank_);
  const int64_t periodNs = static_cast<int64_t>(heartbeatMs_) * 1000000;
  int64_t nextBeat = nowNs();
  std::vector<pollfd> fds;
  std::vector<Neighbour*> owners;
  while (!stop_.load()) {
    int64_t now = nowNs();
    if (now >= nextBeat) {
      sendToAll(kHeartbeat, rank_, "");
      nextBeat = now + periodNs;
    }
    fds.assign(1, pollfd{wakeFd_, POLLIN, 0});
    owners.assign(1, nullptr);
    for (Neighbour& n : neighbours_)
      if (n.open) {
        fds.push_back({n.fd, POLLIN, 0});
        owners.push_back(&n);
      }
    int waitMs = static_cast<int>(std::max<int64_t>(0, (nextBeat - now + 999999) / 1000000));
    int rc = poll(fds.data(), fds.size(), waitMs);
    if (rc < 0 && errno != EINTR) break;
    now = nowNs();
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents != 0) onReadable(*owners[i], now);
    for (Neighbour& n : neighbours_) {
      if (!n.open || n.departed) continue;
      int64_t silentMs = (now - n.lastHeardNs) / 1000000;
      if (silentMs > silenceMs_)
        report(n.peer, names_[n.peer] + " is unresponsive: no heartbeat for " +
                           std::to_string(silentMs) +
                           " ms (stopped, hung or unreachable; seen by rank " +
                           std::to_string(rank_) + ")");
    }
  }
}

}  // namespace bccl
