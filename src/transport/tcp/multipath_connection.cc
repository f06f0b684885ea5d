#include "transport/tcp/multipath_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/deadline.h"
#include "core/logging.h"
#include "core/socket.h"
#include "transport/multipath/chunk_scheduler.h"
#include "transport/tcp/tcp_delivery.h"
#include "transport/wait_set.h"

namespace bccl {
namespace {

constexpr size_t kBounceBytes = 256 * 1024;
// Small frames are acknowledged in batches or on the next frame going back, so an 8-byte message
// costs no extra system call; this many unacknowledged frames force an acknowledgement.
constexpr uint64_t kLazyAckFrames = 32;
// How often a busy path asks the kernel what it delivered (a system call each time).
constexpr int64_t kDeliveryPeriodNs = 1000000;
// Idle paths are read on every this many progress calls (and whenever poll() says so), so a
// small message on the primary path costs no extra system call per call.
constexpr uint64_t kSweepEvery = 16;
// A path that delivered something this recently is read on every call.
constexpr int64_t kHotNs = 2000000;
// How long closing waits for the peer's TCP to take our last bytes.
constexpr int kLingerMs = 200;
// With BCCL_DEBUG=TRACE, each busy connection logs its paths this often.
constexpr int64_t kTraceEveryNs = 200000000;

bool wouldBlock(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

std::string endpoints(int fd) {
  SockAddr local = localAddressOf(fd);
  SockAddr remote;
  remote.len = sizeof(remote.storage);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&remote.storage), &remote.len) != 0)
    remote.len = 0;
  return local.toString() + " -> " + remote.toString();
}

std::string closedWhy(ssize_t rc, int err) {
  if (rc == 0) return "the peer closed it";
  return std::string(strerror(err));
}

}  // namespace

MultipathConnection::MultipathConnection(int peer, std::string peerName,
                                         const std::vector<int>& fds,
                                         const MultipathOptions& options,
                                         PathReconnector* reconnector)
    : peer_(peer),
      peerName_(std::move(peerName)),
      opt_(options),
      reconnector_(reconnector),
      sends_(std::min(options.copyBytes, options.chunkBytes)) {
  for (size_t i = 0; i < fds.size(); ++i) {
    auto p = std::make_unique<Path>(opt_.rateTauNs);
    p->index = static_cast<int>(i);
    p->bounce.resize(kBounceBytes);
    attach(*p, fds[i], 0);
    paths_.push_back(std::move(p));
  }
  std::string names;
  for (const auto& p : paths_) names += "; " + p->name;
  BCCL_INFO("%zu tcp paths to %s%s", paths_.size(), peerName_.c_str(), names.c_str());
}

MultipathConnection::~MultipathConnection() {
  if (!broken_) closeGracefully();
  std::string stats;
  for (auto& p : paths_) {
    stats += " " + p->name + ": " + std::to_string(p->bytesSent >> 20) + " MiB sent, " +
             std::to_string(p->failures) + " failure(s);";
    if (p->fd >= 0) close(p->fd);
  }
  for (Offer& o : offers_) close(o.fd);
  BCCL_INFO("paths to %s:%s", peerName_.c_str(), stats.c_str());
}

void MultipathConnection::attach(Path& p, int fd, uint32_t generation) {
  setNonBlocking(fd, true);
  setNoDelay(fd);
  {
    std::lock_guard<std::mutex> lock(fdMu_);
    p.fd = fd;
  }
  p.name = "path " + std::to_string(p.index) + " (" + endpoints(fd) + ")";
  p.up = true;
  p.generation = generation;
  p.ctrl.clear();
  p.framing = false;
  p.outWritten = 0;
  p.blocked = false;
  p.consumed = p.ackSent = 0;
  p.ackDue = false;
  p.rx = Rx::kHeader;
  p.inHave = 0;
  p.pos = p.skip = p.deliverPos = 0;
  p.stage = std::vector<char>();
  p.bounceFill = 0;
  p.flight.reset();
  p.rate.reset();
  p.acked = 0;
  p.progressNs = p.heardNs = nowNs();
  p.pingNs = 0;
  TcpDelivery d;
  p.kernelInfo = readTcpDelivery(fd, &d);
  p.wireAcked = d.bytesAcked;
  p.wireWritten = d.bytesAcked + d.unacked;  // the hello went before
  p.infoNs = 0;
}

int MultipathConnection::primary() const {
  for (const auto& p : paths_)
    if (p->up) return p->index;
  return -1;
}

bool MultipathConnection::worthReading(const Path& p, int64_t now) const {
  // Small messages go over the primary path; chunks of large ones and acknowledgements of what
  // a path carries may come on any.
  return p.index == primary() || now - p.heardNs < kHotNs || p.rx != Rx::kHeader || p.inHave > 0 ||
         p.framing || queued(p) > 0 || assembly_.expectsMoreThan(opt_.copyBytes);
}

uint64_t MultipathConnection::queued(const Path& p) const {
  return p.kernelInfo ? p.wireWritten - p.wireAcked : p.flight.bytes();
}

void MultipathConnection::sampleDelivery(Path& p, int64_t now) {
  if (!p.kernelInfo || p.wireWritten == p.wireAcked || now - p.infoNs < kDeliveryPeriodNs) return;
  p.infoNs = now;
  TcpDelivery d;
  if (!readTcpDelivery(p.fd, &d)) {
    p.kernelInfo = false;
    return;
  }
  p.rate.observeRtt(d.minRttNs, now);
  if (d.bytesAcked <= p.wireAcked) return;
  const uint64_t delta = d.bytesAcked - p.wireAcked;
  p.wireAcked = std::min(d.bytesAcked, p.wireWritten);
  p.rate.onDelivered(delta, now, p.wireWritten > p.wireAcked, sends_.backlog() == 0);
}

void MultipathConnection::closeGracefully() {
  // GOODBYE, then our FIN after everything queued. Closing a socket with unread input makes the
  // kernel reset it and drop what it has not sent yet (the last message of a send that completed
  // when written, say), and the peer's acknowledgements and probes arrive unasked: so drain
  // input until the peer's TCP has acknowledged all our output, for at most kLingerMs.
  FrameHeader bye;
  bye.type = kFrameGoodbye;
  std::vector<pollfd> fds;
  for (auto& p : paths_) {
    if (!p->up) continue;
    if (!p->framing) {
      bye.path = static_cast<uint16_t>(p->index);
      p->ctrl.append(reinterpret_cast<const char*>(&bye), sizeof(bye));
      ssize_t ignored = send(p->fd, p->ctrl.data(), p->ctrl.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)ignored;
    }
    shutdown(p->fd, SHUT_WR);
    // A path silent for the failure deadline would only make closing wait for nothing.
    if (nowNs() - p->heardNs < static_cast<int64_t>(opt_.stallMs) * 1000000)
      fds.push_back({p->fd, POLLIN, 0});
  }
  const Deadline deadline = Deadline::afterMs(kLingerMs);
  char sink[4096];
  while (!fds.empty() && !deadline.expired()) {
    bool delivered = true;
    for (pollfd& f : fds) {
      while (f.fd >= 0 && recv(f.fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
      }
      TcpDelivery d;
      if (f.fd >= 0 && readTcpDelivery(f.fd, &d) && d.unacked > 0) delivered = false;
    }
    if (delivered) break;
    poll(fds.data(), fds.size(), deadline.remainingMs(5));
  }
}

int MultipathConnection::pathsUp() const {
  int n = 0;
  for (const auto& p : paths_) n += p->up ? 1 : 0;
  return n;
}

Status MultipathConnection::failedStatus() const {
  if (severRequested_.load())
    return remoteError(peerName_ + ": tcp paths severed (fault injection)").blaming(peer_);
  return remoteError(peerName_ + ": every tcp path failed (last: " + lastFailure_ +
                     "); the peer process exited, crashed or is unreachable")
      .blaming(peer_);
}

void MultipathConnection::failPath(Path& p, const std::string& why, bool tellPeer) {
  if (!p.up) return;
  if (peerLeft_) {
    // The peer closed its communicator: nothing failed, nothing to resend or reconnect.
    std::lock_guard<std::mutex> lock(fdMu_);
    if (p.fd >= 0) close(p.fd);
    p.fd = -1;
    p.up = false;
    lastFailure_ = p.name + ": " + peerName_ + " closed its communicator";
    return;
  }
  std::vector<ChunkRef> lost = p.flight.drain();
  uint64_t lostBytes = 0;
  for (const ChunkRef& c : lost) {
    sends_.resend(c);
    lostBytes += c.len;
  }
  assembly_.abandon(p.index);
  {
    std::lock_guard<std::mutex> lock(fdMu_);
    if (p.fd >= 0) close(p.fd);
    p.fd = -1;
  }
  p.up = false;
  p.framing = false;
  p.ctrl.clear();
  p.stage = std::vector<char>();
  ++p.failures;
  lastFailure_ = p.name + ": " + why;
  const int left = pathsUp();
  BCCL_WARN(
      "%s: %s failed: %s; %zu unacknowledged chunk(s) (%llu bytes) go again over %d other "
      "path(s)%s",
      peerName_.c_str(), p.name.c_str(), why.c_str(), lost.size(),
      static_cast<unsigned long long>(lostBytes), left,
      left > 0 ? "; reconnecting it in the background" : "");
  if (tellPeer)
    for (auto& q : paths_)
      if (q->up) queueControl(*q, kFramePathDown, 0, static_cast<uint64_t>(p.index), p.generation);
  if (reconnector_ != nullptr && left > 0) reconnector_->pathDown(peer_, p.index, p.generation);
}

void MultipathConnection::offerPath(int path, uint32_t generation, int fd) {
  std::lock_guard<std::mutex> lock(fdMu_);
  offers_.push_back({path, generation, fd});
  hasOffers_.store(true);
}

void MultipathConnection::adoptOffers() {
  if (!hasOffers_.load()) return;
  std::vector<Offer> got;
  {
    std::lock_guard<std::mutex> lock(fdMu_);
    got.swap(offers_);
    hasOffers_.store(false);
  }
  for (const Offer& o : got) {
    if (broken_ || o.path < 0 || o.path >= numPaths() ||
        o.generation <= paths_[static_cast<size_t>(o.path)]->generation) {
      close(o.fd);
      continue;
    }
    Path& p = *paths_[static_cast<size_t>(o.path)];
    if (p.up) failPath(p, "the peer replaced it with a new connection", false);
    attach(p, o.fd, o.generation);
    BCCL_WARN("%s: %s is back in use (reconnection %u)", peerName_.c_str(), p.name.c_str(),
              o.generation);
  }
}

Status MultipathConnection::postSend(const void* data, size_t bytes, uint64_t token) {
  if (broken_) return failedStatus();
  sends_.post(data, bytes, token);
  return Status::ok();
}

Status MultipathConnection::postRecv(const RecvTarget& target, size_t bytes, uint64_t token) {
  if (broken_) return failedStatus();
  assembly_.post(target, bytes, token);
  return Status::ok();
}

Status MultipathConnection::progress(std::vector<uint64_t>* completed) {
  if (severRequested_.load() && !broken_) {
    broken_ = true;
    std::lock_guard<std::mutex> lock(fdMu_);
    for (auto& p : paths_) {
      if (p->fd >= 0) close(p->fd);
      p->fd = -1;
      p->up = false;
    }
  }
  if (broken_) return failedStatus();
  adoptOffers();
  const int64_t now = nowNs();
  // Sends first: a small message goes out at once, and completes before reading decides whether
  // anything is still awaited; again after reading, for the room acknowledgements made.
  for (auto& p : paths_)
    if (p->up) sampleDelivery(*p, now);
  BCCL_RETURN_IF_ERROR(pumpSends(now, completed));
  const bool sweep = ++pollCount_ % kSweepEvery == 0;
  for (auto& p : paths_) {
    if (!p->up || !(sweep || worthReading(*p, now))) continue;
    std::string why;
    Status st = readPath(*p, now, sweep, completed, &why);
    if (!st.isOk()) {
      broken_ = true;
      return st;
    }
    if (!why.empty()) failPath(*p, why);
  }
  Status ready = assembly_.takeReady(completed);
  if (!ready.isOk()) {
    broken_ = true;
    return Status(ready.code(), peerName_ + " " + ready.message());
  }
  if (sends_.hasWork()) BCCL_RETURN_IF_ERROR(pumpSends(now, completed));
  checkStalls(now);
  if (logLevel() >= LogLevel::kTrace && now - traceNs_ > kTraceEveryNs) {
    traceNs_ = now;
    tracePaths();
  }
  for (auto& p : paths_) {
    if (!p->up) continue;
    if (p->ackDue || p->consumed - p->ackSent >= kLazyAckFrames)
      queueControl(*p, kFrameAck, 0, 0, 0);
    if (!p->ctrl.empty() && !p->framing) {
      std::string why;
      if (!flush(*p, completed, &why)) failPath(*p, why);
    }
  }
  if (pathsUp() == 0) {
    broken_ = true;
    // A peer that left after the last exchange is no failure of anything this rank waits for.
    if (assembly_.expecting() || sends_.hasUnreported()) return failedStatus();
  }
  return Status::ok();
}

Status MultipathConnection::readPath(Path& p, int64_t now, bool eager,
                                     std::vector<uint64_t>* completed, std::string* why) {
  for (;;) {
    if (!p.up) return Status::ok();
    // Between frames, read on only if this rank waits for something from the peer: a frame it
    // does not need yet can wait in the kernel, and the call costs no failed recv(). Sweeps read
    // everything, so probes are answered even by a rank that expects nothing.
    if (!eager && p.rx == Rx::kHeader && p.inHave == 0 && !assembly_.expecting() &&
        !sends_.hasUnreported() && !p.ackDue)
      return Status::ok();
    if (p.rx == Rx::kHeader) {
      ssize_t rc = recv(p.fd, reinterpret_cast<char*>(&p.in) + p.inHave,
                        sizeof(FrameHeader) - p.inHave, MSG_DONTWAIT);
      if (rc <= 0) {
        if (rc < 0 && wouldBlock(errno)) return Status::ok();
        if (rc < 0 && errno == EINTR) continue;
        *why = closedWhy(rc, errno);
        return Status::ok();
      }
      p.inHave += static_cast<size_t>(rc);
      if (p.inHave < sizeof(FrameHeader)) continue;
      p.inHave = 0;
      if (p.in.magic != kFrameMagic || p.in.path != p.index || p.in.type < kFrameData ||
          p.in.type > kFrameGoodbye) {
        *why = "stream out of step (bad frame header)";
        return Status::ok();
      }
      onHeader(p, now, completed);
      if (!p.up || p.in.type != kFrameData) continue;
      StatusOr<RecvAssembly::Placement> place =
          assembly_.begin(p.index, p.in.seq, p.in.msgBytes, p.in.offset, p.in.len);
      if (!place.isOk())
        return Status(place.status().code(), peerName_ + " " + place.status().message());
      p.mode = place.value().mode;
      p.skip = place.value().skip;
      p.pos = 0;
      p.deliverPos = p.skip;
      p.bounceFill = 0;
      if (p.mode == RecvAssembly::Mode::kStage) p.stage.resize(p.in.len);
      p.rx = Rx::kPayload;
    }
    bool blocked = false;
    BCCL_RETURN_IF_ERROR(readPayload(p, completed, why, &blocked));
    if (!why->empty() || blocked) return Status::ok();
  }
}

void MultipathConnection::onHeader(Path& p, int64_t now, std::vector<uint64_t>* completed) {
  const FrameHeader& h = p.in;
  p.heardNs = now;
  if (h.ack > p.acked) {
    std::vector<PathFlight::Entry> done;
    p.flight.ackUpTo(h.ack, &done);
    p.acked = h.ack;
    uint64_t bytes = 0;
    int64_t newest = 0;
    for (const PathFlight::Entry& e : done) {
      sends_.acked(e.chunk, completed);
      bytes += e.chunk.len;
      newest = std::max(newest, e.sentNs);
    }
    if (!done.empty()) {
      if (!p.kernelInfo) p.rate.onAck(bytes, newest, now, !p.flight.empty(), sends_.backlog() == 0);
      p.progressNs = now;
    }
  }
  if (h.type == kFrameGoodbye) peerLeft_ = true;
  if (h.type == kFrameAck && (h.flags & kFrameWantAck) != 0) p.ackDue = true;
  if (h.type == kFramePathDown && h.offset < paths_.size() &&
      static_cast<int>(h.offset) != p.index) {
    Path& q = *paths_[h.offset];
    if (q.up && q.generation == h.generation) failPath(q, peerName_ + " gave it up", false);
  }
}

Status MultipathConnection::readPayload(Path& p, std::vector<uint64_t>* completed, std::string* why,
                                        bool* blocked) {
  const FrameHeader& h = p.in;
  while (p.pos < h.len) {
    const RecvTarget* t = nullptr;
    if (p.mode == RecvAssembly::Mode::kDeliver) {
      t = assembly_.owned(p.index, h.seq, h.offset);
      // Another copy finished this chunk meanwhile: the rest of this one is surplus.
      if (t == nullptr) p.mode = RecvAssembly::Mode::kDiscard;
    }
    char* into = p.bounce.data();
    size_t want = std::min<uint64_t>(p.bounce.size(), h.len - p.pos);
    const bool skipping = t != nullptr && p.pos < p.skip;
    if (p.mode == RecvAssembly::Mode::kStage) {
      into = p.stage.data() + p.pos;
      want = h.len - p.pos;
    } else if (skipping) {
      want = std::min<uint64_t>(want, p.skip - p.pos);
    } else if (t != nullptr && t->operand == nullptr) {
      into = t->dst + h.offset + p.pos;  // a plain receive lands in place, no staging copy
      want = h.len - p.pos;
    } else if (t != nullptr) {
      into = p.bounce.data() + p.bounceFill;
      want = std::min<uint64_t>(p.bounce.size() - p.bounceFill, h.len - p.pos);
    }
    ssize_t rc = recv(p.fd, into, want, MSG_DONTWAIT);
    if (rc <= 0) {
      if (rc < 0 && wouldBlock(errno)) {
        *blocked = true;
        return Status::ok();
      }
      if (rc < 0 && errno == EINTR) continue;
      *why = closedWhy(rc, errno);
      return Status::ok();
    }
    p.pos += static_cast<uint64_t>(rc);
    if (t == nullptr || skipping) continue;
    if (t->operand == nullptr) {
      p.deliverPos = p.pos;
    } else {
      // Reduce whole elements; a split trailing element waits for its other bytes.
      size_t have = p.bounceFill + static_cast<size_t>(rc);
      size_t whole = have - have % t->elemSize;
      t->deliver(h.offset + p.deliverPos, p.bounce.data(), whole);
      p.deliverPos += whole;
      p.bounceFill = have - whole;
      if (p.bounceFill > 0) memmove(p.bounce.data(), p.bounce.data() + whole, p.bounceFill);
    }
    assembly_.advance(h.seq, h.offset, p.deliverPos);
  }
  endFrame(p, completed);
  return Status::ok();
}

void MultipathConnection::endFrame(Path& p, std::vector<uint64_t>* completed) {
  const FrameHeader& h = p.in;
  ++p.consumed;
  // The sender waits for this acknowledgement to complete its send.
  if ((h.flags & kFrameWantAck) != 0) p.ackDue = true;
  if (p.mode == RecvAssembly::Mode::kDeliver) {
    assembly_.finish(p.index, h.seq, h.offset, completed);
  } else if (p.mode == RecvAssembly::Mode::kStage) {
    Status st = assembly_.staged(h.seq, h.msgBytes, h.offset, std::move(p.stage), completed);
    p.stage = std::vector<char>();
    // Only a size mismatch fails here, and begin() already checked posted messages; an early
    // chunk is checked when its message is posted (takeReady).
    if (!st.isOk()) BCCL_WARN("%s: %s", peerName_.c_str(), st.message().c_str());
  }
  p.rx = Rx::kHeader;
}

void MultipathConnection::startFrame(Path& p, const ChunkRef& c, int64_t now) {
  FrameHeader& h = p.out;
  h = FrameHeader{};
  h.type = kFrameData;
  h.path = static_cast<uint16_t>(p.index);
  h.len = static_cast<uint32_t>(c.len);
  h.seq = c.seq;
  h.msgBytes = sends_.messageBytes(c.seq);
  h.offset = c.offset;
  h.ack = p.consumed;  // the acknowledgement rides along
  if (!sends_.copied(c.seq)) h.flags = kFrameWantAck;
  p.ackSent = p.consumed;
  p.ackDue = false;
  p.payload = sends_.payload(c);
  p.outWritten = 0;
  p.framing = true;
  p.chunk = c;
  if (p.flight.empty()) p.progressNs = now;
  p.flight.sent(c, now);
}

void MultipathConnection::queueControl(Path& p, uint8_t type, uint8_t flags, uint64_t offset,
                                       uint32_t generation) {
  FrameHeader h;
  h.type = type;
  h.flags = flags;
  h.path = static_cast<uint16_t>(p.index);
  h.offset = offset;
  h.generation = generation;
  h.ack = p.consumed;
  p.ackSent = p.consumed;
  p.ackDue = false;
  p.ctrl.append(reinterpret_cast<const char*>(&h), sizeof(h));
}

bool MultipathConnection::flush(Path& p, std::vector<uint64_t>* completed, std::string* why) {
  for (;;) {
    iovec iov[3];
    int n = 0;
    const uint64_t frameBytes = sizeof(FrameHeader) + (p.framing ? p.out.len : 0);
    const bool midFrame = p.framing && p.outWritten > 0;
    // Control frames go between data frames, never inside one.
    if (!midFrame && !p.ctrl.empty()) iov[n++] = {p.ctrl.data(), p.ctrl.size()};
    if (p.framing) {
      if (p.outWritten < sizeof(FrameHeader)) {
        iov[n++] = {reinterpret_cast<char*>(&p.out) + p.outWritten,
                    sizeof(FrameHeader) - p.outWritten};
        if (p.out.len > 0) iov[n++] = {const_cast<char*>(p.payload), p.out.len};
      } else {
        const uint64_t off = p.outWritten - sizeof(FrameHeader);
        iov[n++] = {const_cast<char*>(p.payload) + off, p.out.len - off};
      }
    }
    if (n == 0) {
      p.blocked = false;
      return true;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(n);
    ssize_t rc = sendmsg(p.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (rc < 0) {
      if (wouldBlock(errno)) {
        p.blocked = true;
        return true;
      }
      if (errno == EINTR) continue;
      *why = std::string("send failed: ") + strerror(errno);
      return false;
    }
    uint64_t left = static_cast<uint64_t>(rc);
    p.wireWritten += left;
    if (!midFrame && !p.ctrl.empty()) {
      const size_t c = static_cast<size_t>(std::min<uint64_t>(left, p.ctrl.size()));
      p.ctrl.erase(0, c);
      left -= c;
    }
    if (p.framing) {
      p.outWritten += left;
      if (p.outWritten == frameBytes) {
        p.framing = false;
        p.bytesSent += p.out.len;
        sends_.written(p.chunk, completed);
      }
    }
  }
}

Status MultipathConnection::pumpSends(int64_t now, std::vector<uint64_t>* completed) {
  for (auto& p : paths_) {
    if (!p->up || (!p->framing && p->ctrl.empty())) continue;
    std::string why;
    if (!flush(*p, completed, &why)) failPath(*p, why);
  }
  std::vector<PathLoad> loads(paths_.size());
  while (sends_.hasWork()) {
    for (size_t i = 0; i < paths_.size(); ++i) {
      const Path& p = *paths_[i];
      PathLoad& l = loads[i];
      l.up = p.up;
      l.ready = p.up && !p.framing;
      l.inflight = queued(p);
      l.rate = p.rate.bytesPerSec();
      l.window = pathWindow(l.rate, p.rate.minRttNs(), opt_.minWindow, opt_.maxWindow);
    }
    const ChunkRef c = sends_.peek(opt_.chunkBytes);
    int pick = -1;
    // A small message goes whole over the primary path, where the receiver looks first, unless
    // that path is busy with bulk data.
    const int first = primary();
    if (first >= 0 && sends_.copied(c.seq) && loads[static_cast<size_t>(first)].ready &&
        loads[static_cast<size_t>(first)].inflight < opt_.chunkBytes)
      pick = first;
    else
      pick = pickPath(loads, std::max<uint64_t>(c.len, 1), sends_.backlog());
    if (pick < 0) break;
    Path& p = *paths_[static_cast<size_t>(pick)];
    sends_.take(c);
    startFrame(p, c, now);
    std::string why;
    if (!flush(p, completed, &why)) failPath(p, why);
  }
  return Status::ok();
}

void MultipathConnection::checkStalls(int64_t now) {
  const int64_t stallNs = static_cast<int64_t>(opt_.stallMs) * 1000000;
  for (auto& pp : paths_) {
    Path& p = *pp;
    if (!p.up || p.flight.empty()) continue;
    const int64_t quiet = now - p.progressNs;
    // Failed: quiet for the deadline, and a probe sent since its last acknowledgement went
    // unanswered for half of it while another path answered after the probe. Measuring from the
    // probe, not from the last acknowledgement, keeps a pause between operations (when nobody
    // reads) from counting as silence.
    if (quiet >= stallNs && p.pingNs > p.progressNs && now - p.pingNs >= stallNs / 2) {
      bool failed = false;
      for (auto& q : paths_) {
        if (q.get() == &p || !q->up || q->heardNs <= p.pingNs) continue;
        failPath(p, "no acknowledgement for " + std::to_string(quiet / 1000000) +
                        " ms, nor an answer to a probe, while " + q->name + " answered");
        failed = true;
        break;
      }
      if (failed) continue;
    }
    if (quiet > stallNs / 2 && (p.pingNs <= p.progressNs || now - p.pingNs >= stallNs / 2)) {
      // Ask this path and the quiet others for an acknowledgement: an answer on another path
      // proves the peer is reading, so this one's silence is the path's fault.
      p.pingNs = now;
      queueControl(p, kFrameAck, kFrameWantAck, 0, 0);
      for (auto& q : paths_)
        if (q.get() != &p && q->up && now - q->heardNs > stallNs / 4 &&
            now - q->pingNs > stallNs / 4) {
          q->pingNs = now;
          queueControl(*q, kFrameAck, kFrameWantAck, 0, 0);
        }
    }
  }
}

void MultipathConnection::tracePaths() const {
  std::string line;
  for (const auto& p : paths_) {
    char b[256];
    snprintf(
        b, sizeof(b),
        "; path %d %s: %.1f MB/s, min rtt %.3f ms, window %.2f MB, queued %.2f MB, "
        "unacked %.2f MB, sent %llu MiB",
        p->index, p->up ? "up" : "down", p->rate.bytesPerSec() / 1e6, p->rate.minRttNs() / 1e6,
        pathWindow(p->rate.bytesPerSec(), p->rate.minRttNs(), opt_.minWindow, opt_.maxWindow) / 1e6,
        queued(*p) / 1e6, p->flight.bytes() / 1e6,
        static_cast<unsigned long long>(p->bytesSent >> 20));
    line += b;
  }
  BCCL_TRACE("paths to %s: backlog %.2f MB, staged %.2f MB%s", peerName_.c_str(),
             sends_.backlog() / 1e6, assembly_.stagedBytes() / 1e6, line.c_str());
}

void MultipathConnection::addToWaitSet(WaitSet* set) const {
  for (const auto& p : paths_) {
    if (!p->up) continue;
    short events = POLLIN;
    if (p->framing || !p->ctrl.empty()) events |= POLLOUT;
    set->addFd(p->fd, events);
  }
}

void MultipathConnection::dropPending() {
  sends_.clear();
  assembly_.clear();
  for (auto& p : paths_) p->flight.reset();
  broken_ = true;  // a frame may have been cut mid-way: the streams are unusable
}

bool MultipathConnection::failOnePath() {
  // Another thread, like sever(): only the sockets are touched, under fdMu_. The progress thread
  // then sees the highest open path fail as after a reset and fails it over; PathManager
  // reconnects it.
  std::lock_guard<std::mutex> lock(fdMu_);
  int open = 0;
  Path* victim = nullptr;
  for (auto& p : paths_)
    if (p->fd >= 0) {
      ++open;
      victim = p.get();
    }
  if (open < 2) return false;
  // The index, not the name: the progress thread renames a path when it reconnects.
  BCCL_WARN("fault injection: shutting down path %d to %s", victim->index, peerName_.c_str());
  shutdown(victim->fd, SHUT_RDWR);
  return true;
}

void MultipathConnection::sever() {
  severRequested_.store(true);
  std::lock_guard<std::mutex> lock(fdMu_);
  for (auto& p : paths_)
    if (p->fd >= 0) shutdown(p->fd, SHUT_RDWR);
}

}  // namespace bccl
