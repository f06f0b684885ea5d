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
    auto it = std::find_if(neighbours_.begin(), neighbours_.end(),
                           [&l](const Neighbour& n) { return n.peer == l.peer; });
    if (it == neighbours_.end()) {
      neighbours_.push_back(Neighbour{l.peer, {}, false});
      it = neighbours_.end() - 1;
    }
    LinkEnd end;
    end.fd = l.fd;
    end.lastHeardNs = now;
    it->links.push_back(std::move(end));
  }
  wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  thread_ = std::thread([this] { run(); });
}

bool FailureDetector::Neighbour::anyOpen() const {
  return std::any_of(links.begin(), links.end(), [](const LinkEnd& l) { return l.open; });
}

FailureDetector::~FailureDetector() {
  shutdown(true);
  for (Neighbour& n : neighbours_)
    for (LinkEnd& l : n.links) close(l);
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
    for (LinkEnd& l : n.links)
      if (l.fd >= 0) ::shutdown(l.fd, SHUT_RDWR);
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

void FailureDetector::sendTo(LinkEnd& l, const std::string& bytes) {
  if (!l.open) return;
  l.outbox += bytes;
  while (!l.outbox.empty()) {
    ssize_t sent = send(l.fd, l.outbox.data(), l.outbox.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0) {
      l.outbox.erase(0, static_cast<size_t>(sent));
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    break;  // full (a stopped peer or a cut path) or broken: the reader side notices the latter
  }
  // A silent link must not make us hoard heartbeats: keep at most a few messages queued.
  if (l.outbox.size() > 16 * sizeof(ControlMsg))
    l.outbox.resize(l.outbox.size() % sizeof(ControlMsg));
}

void FailureDetector::sendToAll(uint32_t type, int rank, const std::string& text) {
  const std::string bytes = encode(type, rank, text);
  std::lock_guard<std::mutex> lock(sendMu_);
  for (Neighbour& n : neighbours_)
    if (n.peer != rank || type != kRevoke)
      for (LinkEnd& l : n.links) sendTo(l, bytes);
}

void FailureDetector::close(LinkEnd& l) {
  if (l.fd >= 0) ::close(l.fd);
  l.fd = -1;
  l.open = false;
}

void FailureDetector::onReadable(Neighbour& n, LinkEnd& l, int64_t now) {
  char buf[4096];
  bool closed = false;
  std::string why;
  for (;;) {
    ssize_t got = recv(l.fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (got > 0) {
      l.inbox.append(buf, static_cast<size_t>(got));
      l.lastHeardNs = now;
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
  while (l.inbox.size() >= sizeof(ControlMsg)) {
    ControlMsg m;
    memcpy(&m, l.inbox.data(), sizeof(m));
    l.inbox.erase(0, sizeof(m));
    if (m.magic != kControlMagic) continue;
    if (m.type == kGoodbye) n.departed = true;
    if (m.type == kRevoke && m.rank >= kRevokedComm && m.rank < static_cast<int>(names_.size()))
      report(m.rank, std::string(m.text, std::min<size_t>(m.textBytes, sizeof(m.text))));
  }
  if (!closed) return;
  {
    std::lock_guard<std::mutex> lock(sendMu_);
    close(l);
  }
  // Another path's link still open: this one's path failed, not the neighbour.
  if (!n.departed && !n.anyOpen())
    report(n.peer, names_[n.peer] + " failed: " + why +
                       ", the process exited or crashed (seen by rank " + std::to_string(rank_) +
                       ")");
}

void FailureDetector::run() {
  ScopedLogRank tag(rank_);
  const int64_t periodNs = static_cast<int64_t>(heartbeatMs_) * 1000000;
  int64_t nextBeat = nowNs();
  std::vector<pollfd> fds;
  std::vector<std::pair<Neighbour*, LinkEnd*>> owners;
  while (!stop_.load()) {
    int64_t now = nowNs();
    if (now >= nextBeat) {
      sendToAll(kHeartbeat, rank_, "");
      nextBeat = now + periodNs;
    }
    fds.assign(1, pollfd{wakeFd_, POLLIN, 0});
    owners.assign(1, {nullptr, nullptr});
    for (Neighbour& n : neighbours_)
      for (LinkEnd& l : n.links)
        if (l.open) {
          fds.push_back({l.fd, POLLIN, 0});
          owners.push_back({&n, &l});
        }
    int waitMs = static_cast<int>(std::max<int64_t>(0, (nextBeat - now + 999999) / 1000000));
    int rc = poll(fds.data(), fds.size(), waitMs);
    if (rc < 0 && errno != EINTR) break;
    now = nowNs();
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents != 0) onReadable(*owners[i].first, *owners[i].second, now);
    for (Neighbour& n : neighbours_) {
      if (!n.anyOpen() || n.departed) continue;
      // Heard on any path is alive: one cut path must not look like a hung rank.
      int64_t lastHeard = 0;
      for (const LinkEnd& l : n.links)
        if (l.open) lastHeard = std::max(lastHeard, l.lastHeardNs);
      int64_t silentMs = (now - lastHeard) / 1000000;
      if (silentMs > silenceMs_)
        report(n.peer, names_[n.peer] + " is unresponsive: no heartbeat for " +
                           std::to_string(silentMs) +
                           " ms (stopped, hung or unreachable; seen by rank " +
                           std::to_string(rank_) + ")");
    }
  }
}

}  // namespace bccl
