// TCP transport: one stream socket per peer pair (more per pair come with multipath). Each
// message is a small header (its length and a sequence number) followed by the payload, sent
// with one sendmsg() so small messages cost one system call.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "transport/transport.h"

namespace bccl {

class TcpConnection final : public Connection {
 public:
  // Takes ownership of `fd` (connected, authenticated). `peerName` is used in error messages.
  TcpConnection(int peer, int fd, std::string peerName);
  ~TcpConnection() override;

  int peer() const override { return peer_; }
  const char* kind() const override { return "tcp"; }
  Status postSend(const void* data, size_t bytes, uint64_t token) override;
  Status postRecv(const RecvTarget& target, size_t bytes, uint64_t token) override;
  Status progress(std::vector<uint64_t>* completed) override;
  bool hasPending() const override { return !sends_.empty() || !recvs_.empty(); }
  void addToWaitSet(WaitSet* set) const override;
  void dropPending() override;
  void sever() override;

 private:
  struct Header {
    uint64_t bytes;
    uint32_t magic;
    uint32_t seq;
  };
  struct SendOp {
    Header header;
    const char* data;
    size_t sent;  // header bytes included
    uint64_t token;
  };
  struct RecvOp {
    Header header;
    RecvTarget target;
    size_t bytes;
    size_t headerReceived;
    size_t delivered;
    uint64_t token;
  };

  Status progressSends(std::vector<uint64_t>* completed);
  Status progressRecvs(std::vector<uint64_t>* completed);
  Status fail(const std::string& what, int err);

  int peer_;
  int fd_;
  std::string peerName_;
  std::deque<SendOp> sends_;
  std::deque<RecvOp> recvs_;
  uint32_t sendSeq_ = 0;
  uint32_t recvSeq_ = 0;
  // Staging for reductions: bytes land here, whole elements are reduced into place, and a
  // partial trailing element waits for the next read.
  std::vector<char> bounce_;
  size_t bounceFill_ = 0;
  bool broken_ = false;
};

}  // namespace bccl
