// One RDMA context per communicator: the opened ports ("rails": one per device BCCL_IB_HCA
// lists, the first the primary), each with a protection domain, the completion channel its
// connections' CQs report to (fds for a sleeping executor to wait on) and its asynchronous event
// stream (port down and up, QP fatal); the registration cache (primary rail); the transport's
// settings. It outlives every VerbsConnection made with it.
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

  uint32_t rails() const { return static_cast<uint32_t>(rails_.size()); }
  // "rxe0:1 gid[1] ... + rxe1:1 ...": every rail's port, for logs and describe().
  std::string describePorts() const;
  const VerbsPort& port(uint32_t rail = 0) const { return rails_[rail]->port; }
  ibv_context* device(uint32_t rail = 0) const { return rails_[rail]->port.context; }
  ibv_pd* pd(uint32_t rail = 0) const { return rails_[rail]->pd; }
  ibv_comp_channel* channel(uint32_t rail = 0) const { return rails_[rail]->channel; }
  // A secondary rail whose port went down (and has not come back): connections cut out its QPs
  // and do not put them back meanwhile. The primary's going down fails the context instead.
  bool railDown(uint32_t rail) const { return rails_[rail]->down; }
  VerbsMrCache& mrCache() { return *mrCache_; }
  const VerbsConfig& config() const { return config_; }

  // Connections register their QPs so asynchronous events reach them (QP numbers are per device).
  void watch(uint32_t rail, uint32_t qpn, VerbsConnection* conn) {
    watched_[key(rail, qpn)] = conn;
  }
  void unwatch(uint32_t rail, uint32_t qpn) { watched_.erase(key(rail, qpn)); }
  // Reads pending asynchronous events (at most every millisecond unless `force`): QP events go
  // to their connection; a failure of the primary port or device is returned, and sticks; a
  // secondary port's going down or up sets railDown().
  Status pollAsync(bool force = false);
  // Consumes completion-channel events, so the channel fd reflects only events to come.
  void drainCompletionEvents();
  // Every rail's channel fd and async event fd.
  void addToWaitSet(WaitSet* set) const;

 private:
  struct Rail {
    VerbsPort port;
    ibv_pd* pd = nullptr;
    ibv_comp_channel* channel = nullptr;
    bool down = false;
  };
  VerbsContext() = default;
  static uint64_t key(uint32_t rail, uint32_t qpn) { return (uint64_t{rail} << 32) | qpn; }
  void pollRailEvents(uint32_t rail);

  std::vector<std::unique_ptr<Rail>> rails_;
  std::unique_ptr<VerbsMrCache> mrCache_;
  VerbsConfig config_;
  std::map<uint64_t, VerbsConnection*> watched_;
  Status failure_;
  int64_t lastAsyncPollNs_ = 0;
};

}  // namespace bccl
