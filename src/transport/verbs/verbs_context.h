// One RDMA context per communicator: the opened port, a protection domain, the completion channel
// every connection's CQ reports to (one fd for a sleeping executor to wait on), the asynchronous
// event stream (port down, QP fatal), the registration cache, and the transport's settings. It
// outlives every VerbsConnection made with it.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "core/status.h"
#include "transport/verbs/verbs_device.h"
#include "transport/verbs/verbs_mr_cache.h"

namespace bccl {

class VerbsConnection;
class WaitSet;

struct VerbsConfig {
  uint32_t qps = 1;          // BCCL_IB_QPS_PER_PEER
  uint32_t slots = 16;       // receive ring slots per QP
  uint32_t slotBytes = 0;    // bytes per slot (a chunk of a staged message)
  uint32_t grantSlots = 0;   // grant FIFO entries per QP (credits in flight)
  uint32_t eagerSlots = 0;   // eager ring slots per connection (0: no eager path)
  uint32_t eagerBytes = 0;   // largest eager message (at most slotBytes)
  bool zeroCopy = false;     // register user buffers (see verbs_mr_cache.h)
  size_t zeroCopyBytes = 0;  // messages from this size go zero-copy
  uint32_t qpRetryMs = 0;    // BCCL_IB_QP_RETRY_MS: put a failed QP back after this (0: never)
};

class VerbsContext {
 public:
  // Opens the port chosen by the BCCL_IB_* parameters and checks them.
  static StatusOr<std::unique_ptr<VerbsContext>> create();
  ~VerbsContext();
  VerbsContext(const VerbsContext&) = delete;
  VerbsContext& operator=(const VerbsContext&) = delete;

  const VerbsPort& port() const { return port_; }
  ibv_context* device() const { return port_.context; }
  ibv_pd* pd() const { return pd_; }
  ibv_comp_channel* channel() const { return channel_; }
  VerbsMrCache& mrCache() { return *mrCache_; }
  const VerbsConfig& config() const { return config_; }

  // Connections register their QPs so asynchronous events reach them.
  void watch(uint32_t qpn, VerbsConnection* conn) { watched_[qpn] = conn; }
  void unwatch(uint32_t qpn) { watched_.erase(qpn); }
  // Reads pending asynchronous events (at most every millisecond unless `force`): QP events go
  // to their connection; a port or device failure is returned, and sticks.
  Status pollAsync(bool force = false);
  // Consumes completion-channel events, so the channel fd reflects only events to come.
  void drainCompletionEvents();
  // The channel fd and the async event fd.
  void addToWaitSet(WaitSet* set) const;

 private:
  VerbsContext() = default;

  VerbsPort port_;
  ibv_pd* pd_ = nullptr;
  ibv_comp_channel* channel_ = nullptr;
  std::unique_ptr<VerbsMrCache> mrCache_;
  VerbsConfig config_;
  std::map<uint32_t, VerbsConnection*> watched_;
  Status failure_;
  int64_t lastAsyncPollNs_ = 0;
};

}  // namespace bccl
