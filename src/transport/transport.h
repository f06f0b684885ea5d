// The transport interface: a Connection moves ordered messages to and from one peer. It is
// non-blocking: post operations, then call progress() until they complete. Messages on one
// connection match in posting order on both sides (the executor posts them in schedule order),
// so no tags travel on the wire; each message carries its length so a mismatch is an error,
// never silent corruption.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bccl/bccl.h"
#include "core/status.h"

namespace bccl {

class WaitSet;

// Where a received message goes: copied to `dst`, or, when `operand` is set, reduced as
// dst = operand (op) incoming. Transports call deliver() with element-aligned pieces; a
// transport that has the bytes in shared memory can reduce straight out of it.
struct RecvTarget {
  char* dst = nullptr;
  const char* operand = nullptr;
  bcclDataType_t dtype = bcclUint8;
  bcclRedOp_t op = bcclSum;
  size_t elemSize = 1;

  void deliver(size_t offset, const char* data, size_t bytes) const;
};

class Connection {
 public:
  virtual ~Connection() = default;
  virtual int peer() const = 0;
  virtual const char* kind() const = 0;  // "shm", "tcp": for messages and bccl_info
  // The kind and, where it matters, what it runs on (a verbs device, port, GID and MTU).
  virtual std::string describe() const { return kind(); }

  // `token` comes back through progress() when the operation completes. The data must stay
  // valid until then.
  virtual Status postSend(const void* data, size_t bytes, uint64_t token) = 0;
  virtual Status postRecv(const RecvTarget& target, size_t bytes, uint64_t token) = 0;
  // Moves whatever can move now; appends the tokens of finished operations. A failure names the
  // peer and makes the connection unusable.
  virtual Status progress(std::vector<uint64_t>* completed) = 0;
  virtual bool hasPending() const = 0;
  // Registers what a sleeping waiter must watch to be woken when this connection can move.
  virtual void addToWaitSet(WaitSet* set) const = 0;
  // Forgets every posted operation (after an error or abort), so no stale pointer is touched.
  virtual void dropPending() = 0;
  // Which rank's failure made this side abandon its operations (-1: none known); a transport
  // that must tell the peer it abandoned a message says why (see ShmConnection::dropPending).
  virtual void setFailureCause(int rank) { (void)rank; }
  // Cuts the link as a network failure would (fault injection); the object stays valid.
  virtual void sever() {}
  // Breaks one of several paths to the peer (fault injection), as a failing link or QP would;
  // the connection is expected to carry on over the rest. False: no path it could lose.
  virtual bool failOnePath() { return false; }
};

}  // namespace bccl
