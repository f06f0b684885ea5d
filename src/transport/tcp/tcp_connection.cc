#include "transport/tcp/tcp_connection.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/socket.h"
#include "transport/wait_set.h"

namespace bccl {
namespace {

constexpr uint32_t kMsgMagic = 0xBCC1DA7Au;
constexpr size_t kBounceBytes = 256 * 1024;

}  // namespace

TcpConnection::TcpConnection(int peer, int fd, std::string peerName)
    : peer_(peer), fd_(fd), peerName_(std::move(peerName)), bounce_(kBounceBytes) {
  setNonBlocking(fd_, true);
}

TcpConnection::~TcpConnection() {
  if (fd_ >= 0) close(fd_);
}

Status TcpConnection::fail(const std::string& what, int err) {
  broken_ = true;
  std::string why = err == 0 ? "closed the connection" : std::string(strerror(err));
  return remoteError(peerName_ + ": tcp " + what + " failed: " + why +
                     (err == 0 || err == ECONNRESET || err == EPIPE
                          ? " (the peer process exited or crashed)"
                          : ""))
      .blaming(peer_);
}

Status TcpConnection::postSend(const void* data, size_t bytes, uint64_t token) {
  if (broken_) return remoteError(peerName_ + ": tcp connection already failed");
  sends_.push_back(
      SendOp{Header{bytes, kMsgMagic, sendSeq_++}, static_cast<const char*>(data), 0, token});
  return Status::ok();
}

Status TcpConnection::postRecv(const RecvTarget& target, size_t bytes, uint64_t token) {
  if (broken_) return remoteError(peerName_ + ": tcp connection already failed");
  recvs_.push_back(RecvOp{Header{}, target, bytes, 0, 0, token});
  return Status::ok();
}

Status TcpConnection::progress(std::vector<uint64_t>* completed) {
  BCCL_RETURN_IF_ERROR(progressSends(completed));
  return progressRecvs(completed);
}

Status TcpConnection::progressSends(std::vector<uint64_t>* completed) {
  while (!sends_.empty()) {
    SendOp& op = sends_.front();
    const size_t total = sizeof(Header) + op.header.bytes;
    iovec iov[2];
    int n = 0;
    if (op.sent < sizeof(Header)) {
      iov[n++] = {reinterpret_cast<char*>(&op.header) + op.sent, sizeof(Header) - op.sent};
      if (op.header.bytes > 0) iov[n++] = {const_cast<char*>(op.data), op.header.bytes};
    } else {
      size_t off = op.sent - sizeof(Header);
      iov[n++] = {const_cast<char*>(op.data) + off, op.header.bytes - off};
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = n;
    ssize_t rc = sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (rc < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::ok();
      if (errno == EINTR) continue;
      return fail("send", errno);
    }
    op.sent += static_cast<size_t>(rc);
    if (op.sent < total) return Status::ok();
    completed->push_back(op.token);
    sends_.pop_front();
  }
  return Status::ok();
}

Status TcpConnection::progressRecvs(std::vector<uint64_t>* completed) {
  while (!recvs_.empty()) {
    RecvOp& op = recvs_.front();
    if (op.headerReceived < sizeof(Header)) {
      ssize_t rc = recv(fd_, reinterpret_cast<char*>(&op.header) + op.headerReceived,
                        sizeof(Header) - op.headerReceived, MSG_DONTWAIT);
      if (rc == 0) return fail("receive", 0);
      if (rc < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::ok();
        if (errno == EINTR) continue;
        return fail("receive", errno);
      }
      op.headerReceived += static_cast<size_t>(rc);
      if (op.headerReceived < sizeof(Header)) return Status::ok();
      if (op.header.magic != kMsgMagic || op.header.seq != recvSeq_) {
        broken_ = true;
        return internalError(peerName_ + ": tcp stream out of step (bad message header)");
      }
      if (op.header.bytes != op.bytes) {
        broken_ = true;
        return invalidUsage(peerName_ + " sent " + std::to_string(op.header.bytes) +
                            " bytes where " + std::to_string(op.bytes) +
                            " were expected: mismatched counts or datatypes between ranks");
      }
      ++recvSeq_;
    }
    while (op.delivered < op.bytes) {
      const size_t left = op.bytes - op.delivered;
      if (op.target.operand == nullptr) {
        // Plain receive: straight into the destination, no staging copy.
        ssize_t rc = recv(fd_, op.target.dst + op.delivered, left, MSG_DONTWAIT);
        if (rc == 0) return fail("receive", 0);
        if (rc < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::ok();
          if (errno == EINTR) continue;
          return fail("receive", errno);
        }
        op.delivered += static_cast<size_t>(rc);
        continue;
      }
      size_t want = std::min(bounce_.size() - bounceFill_, left - bounceFill_);
      ssize_t rc = recv(fd_, bounce_.data() + bounceFill_, want, MSG_DONTWAIT);
      if (rc == 0) return fail("receive", 0);
      if (rc < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return Status::ok();
        if (errno == EINTR) continue;
        return fail("receive", errno);
      }
      size_t have = bounceFill_ + static_cast<size_t>(rc);
      size_t whole = have - have % op.target.elemSize;
      op.target.deliver(op.delivered, bounce_.data(), whole);
      op.delivered += whole;
      bounceFill_ = have - whole;
      if (bounceFill_ > 0) memmove(bounce_.data(), bounce_.data() + whole, bounceFill_);
    }
    completed->push_back(op.token);
    recvs_.pop_front();
  }
  return Status::ok();
}

void TcpConnection::addToWaitSet(WaitSet* set) const {
  short events = 0;
  if (!recvs_.empty()) events |= POLLIN;
  if (!sends_.empty()) events |= POLLOUT;
  if (events != 0) set->addFd(fd_, events);
}

void TcpConnection::sever() { shutdown(fd_, SHUT_RDWR); }

void TcpConnection::dropPending() {
  sends_.clear();
  recvs_.clear();
  bounceFill_ = 0;
  broken_ = true;
}

}  // namespace bccl
