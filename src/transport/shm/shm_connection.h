// Shared-memory transport between two ranks on one host. Small messages are copied through a
// slot ring in the receiver's segment (the receiver reduces straight out of the slot, no
// staging copy); messages of at least the connection's threshold travel as a descriptor and
// the receiver reads the sender's buffer directly (plain loads when both ranks are threads of
// one process; process_vm_readv between processes, off by default because it is slower here).
#pragma once

#include <sys/types.h>

#include <deque>
#include <string>
#include <vector>

#include "transport/shm/shm_layout.h"
#include "transport/transport.h"

namespace bccl {

struct ShmEndpoints {
  ShmRingHeader* outRing;  // in the peer's segment: my messages to the peer
  Doorbell* peerBell;
  ShmRingHeader* inRing;  // in my segment: the peer's messages to me
  Doorbell* myBell;
  pid_t peerPid;
  bool samePid;
};

class ShmConnection final : public Connection {
 public:
  ShmConnection(int peer, std::string peerName, const ShmGeometry& geometry,
                const ShmEndpoints& ends, size_t cmaThreshold);

  int peer() const override { return peer_; }
  const char* kind() const override { return "shm"; }
  Status postSend(const void* data, size_t bytes, uint64_t token) override;
  Status postRecv(const RecvTarget& target, size_t bytes, uint64_t token) override;
  Status progress(std::vector<uint64_t>* completed) override;
  bool hasPending() const override {
    return !sends_.empty() || !awaitingAck_.empty() || !recvs_.empty();
  }
  void addToWaitSet(WaitSet* set) const override;
  void dropPending() override;
  void setFailureCause(int rank) override { failureCause_ = rank; }

 private:
  struct SendOp {
    const char* data;
    size_t bytes;
    size_t published;
    uint64_t token;
    bool descriptor;
    uint64_t ackNeeded;
    ShmSlotHeader* slot;  // descriptor sends: where it was published
  };
  struct RecvOp {
    RecvTarget target;
    size_t bytes;
    size_t delivered;
    uint64_t token;
  };

  Status progressSends(std::vector<uint64_t>* completed, bool* rang);
  Status progressRecvs(std::vector<uint64_t>* completed, bool* rang);
  Status readDescriptor(const ShmSlotHeader& slot, RecvOp* op);

  int peer_;
  std::string peerName_;
  ShmGeometry geo_;
  ShmEndpoints ends_;
  size_t cmaThreshold_;
  std::deque<SendOp> sends_;
  std::deque<SendOp> awaitingAck_;
  std::deque<RecvOp> recvs_;
  uint64_t descriptorsPublished_ = 0;
  uint32_t sendSeq_ = 0;
  uint32_t recvSeq_ = 0;
  std::vector<char> bounce_;
  bool broken_ = false;
  int failureCause_ = -1;
};

// Whether this process may read `pid`'s memory with process_vm_readv (probed on a known
// address), so senders know whether to offer descriptors.
bool canReadProcess(pid_t pid, const void* remoteAddr, const void* expected, size_t bytes);

}  // namespace bccl
