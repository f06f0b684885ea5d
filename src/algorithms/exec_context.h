// What the executor needs from a communicator, as an interface, so that algorithms and the
// executor do not depend on the communicator's internals (and tests can supply their own).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/deadline.h"
#include "core/status.h"
#include "transport/transport.h"
#include "transport/wait_set.h"

namespace bccl {

class ShmBoard;

class ExecContext {
 public:
  virtual ~ExecContext() = default;
  virtual int rank() const = 0;
  virtual Connection* connection(int peer) = 0;
  virtual std::string peerName(int peer) const = 0;
  virtual int timeoutMs() const = 0;
  // How long an idle executor may spin before yielding: long when every rank has a core of its
  // own, near zero when ranks share cores (a spinner steals its peer's core).
  virtual int spinMicros() const = 0;
  // Whether `peer` certainly runs on another CPU than this rank (another machine, or both
  // bound to one CPU each, different ones). When ranks share CPUs, a wait for such peers only
  // may still spin: the ranks this one would yield its CPU to are not among those it waits for.
  virtual bool runsOnOtherCpu(int /*peer*/) const { return false; }
  // This rank's share of its host's last-level cache, 0 if unknown.
  virtual size_t cacheBytesPerRank() const { return 0; }
  // A non-OK status once the communicator has failed or been aborted: running plans stop.
  virtual Status health() const = 0;
  // Records the first failure; later operations fail fast with it.
  virtual void recordError(const Status& status) = 0;
  // Handles that wake a sleeping executor when the communicator is aborted.
  virtual void addWakeHandles(WaitSet* set) = 0;
  // Checks, without blocking, whether `peer` is still alive (e.g. its process exists).
  virtual Status checkPeerAlive(int peer) = 0;
  // Scratch memory reused across operations; valid until the operation's turn ends.
  virtual char* scratch(size_t bytes) = 0;
  // Operations on one communicator run one at a time, in the order they were issued.
  virtual bool isTurn(uint64_t ticket) const = 0;
  virtual void endTurn(uint64_t ticket) = 0;
  // The shared-memory boards when every rank shares memory with this one, else null.
  virtual ShmBoard* board() { return nullptr; }
};

}  // namespace bccl
