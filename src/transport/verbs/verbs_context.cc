#include "transport/verbs/verbs_context.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "core/deadline.h"
#include "core/logging.h"
#include "core/params.h"
#include "transport/verbs/verbs_connection.h"
#include "transport/verbs/verbs_wire.h"
#include "transport/wait_set.h"

namespace bccl {
namespace {

const IntParam kQpsPerPeer("BCCL_IB_QPS_PER_PEER", 1,
                           "Verbs queue pairs per peer; chunks of a message are spread over them");
const IntParam kSlots(
    "BCCL_IB_SLOTS", 16,
    "Verbs receive-ring slots per queue pair: chunks a sender may have in flight");
// 16 x 256 KiB: 4 MiB in flight per QP covers a 100 Gb/s link's bandwidth-delay product with
// room to spare, and matches BCCL_CHUNK_BYTES, so a pipelined message is one grant. Measured on
// soft-RoCE, a 1 MiB window left a one-way stream at ~60% of ib_write_bw; 4 MiB reached ~85%.
const IntParam kSlotBytes("BCCL_IB_SLOT_BYTES", 256 * 1024,
                          "Bytes per verbs receive-ring slot (the chunk size of staged messages; a "
                          "multiple of 64)");
const IntParam kEagerBytes("BCCL_IB_EAGER_BYTES", 8192,
                           "Verbs messages up to this size are written at once into the "
                           "receiver's eager ring, without waiting for a grant (0: never)");
const IntParam kEagerSlots("BCCL_IB_EAGER_SLOTS", 16,
                           "Verbs eager ring slots per peer: small messages in flight before "
                           "the receiver returns credits");
const IntParam kZeroCopy(
    "BCCL_IB_ZERO_COPY", 0,
    "1: verbs registers user buffers (cached) and writes large messages straight between them. "
    "Only safe when buffers stay mapped between calls (no free/munmap of memory that is then "
    "reused): a cached registration would keep naming the old pages");
const IntParam kZeroCopyBytes("BCCL_IB_ZERO_COPY_BYTES", 256 * 1024,
                              "With BCCL_IB_ZERO_COPY=1, messages from this many bytes go "
                              "zero-copy; smaller ones are staged (cheaper than a lookup)");
const IntParam kQpRetryMs("BCCL_IB_QP_RETRY_MS", 1000,
                          "A verbs QP cut out after a failure is reset and put back in use after "
                          "this long (doubling after each further failure, up to 16x); 0: never");
const IntParam kRegCacheMb("BCCL_IB_REG_CACHE_MB", 4096,
                           "Most user memory (MiB) the verbs registration cache keeps registered");

constexpr int64_t kAsyncPollPeriodNs = 1000000;
// Grant entries beyond the ring slots: zero-copy grants use an entry but no slot.
constexpr uint32_t kExtraGrants = 8;

Status readConfig(VerbsConfig* c) {
  const int64_t qps = kQpsPerPeer.get(), slots = kSlots.get(), slotBytes = kSlotBytes.get();
  if (qps < 1 || qps > kVerbsMaxQps)
    return invalidArgument("BCCL_IB_QPS_PER_PEER must be 1.." + std::to_string(kVerbsMaxQps) +
                           ", not " + std::to_string(qps));
  if (slots < 1 || slots > 4096)
    return invalidArgument("BCCL_IB_SLOTS must be 1..4096, not " + std::to_string(slots));
  if (slotBytes < 64 || slotBytes % 64 != 0 || slotBytes > (1 << 30))
    return invalidArgument("BCCL_IB_SLOT_BYTES must be a multiple of 64 up to 1 GiB, not " +
                           std::to_string(slotBytes));
  c->qps = static_cast<uint32_t>(qps);
  c->slots = static_cast<uint32_t>(slots);
  c->slotBytes = static_cast<uint32_t>(slotBytes);
  c->grantSlots = c->slots + kExtraGrants;
  const int64_t eagerBytes = kEagerBytes.get(), eagerSlots = kEagerSlots.get();
  if (eagerBytes < 0 || eagerSlots < 0 || eagerSlots > 1024)
    return invalidArgument("BCCL_IB_EAGER_BYTES must be >= 0 and BCCL_IB_EAGER_SLOTS 0..1024");
  // Larger eager messages would not fit the one ring slot a lazy grant gives them.
  c->eagerBytes = static_cast<uint32_t>(std::min<int64_t>(eagerBytes, slotBytes));
  c->eagerSlots = eagerBytes > 0 ? static_cast<uint32_t>(eagerSlots) : 0;
  c->zeroCopy = kZeroCopy.get() != 0;
  c->zeroCopyBytes = static_cast<size_t>(std::max<int64_t>(1, kZeroCopyBytes.get()));
  c->qpRetryMs = static_cast<uint32_t>(std::max<int64_t>(0, kQpRetryMs.get()));
  return Status::ok();
}

const char* eventName(ibv_event_type t) { return ibv_event_type_str(t); }

}  // namespace

StatusOr<std::unique_ptr<VerbsContext>> VerbsContext::create() {
  std::unique_ptr<VerbsContext> c(new VerbsContext());
  BCCL_RETURN_IF_ERROR(readConfig(&c->config_));
  StatusOr<std::vector<VerbsPort>> ports = openVerbsPorts();
  if (!ports.isOk()) return ports.status();
  for (VerbsPort& port : ports.value()) {
    // Kept first, so the destructor frees what is made below if a later step fails.
    c->rails_.push_back(std::make_unique<Rail>());
    Rail* rail = c->rails_.back().get();
    rail->port = std::move(port);
    const std::string& dev = rail->port.device;
    rail->pd = ibv_alloc_pd(rail->port.context);
    if (rail->pd == nullptr)
      return systemError("verbs: ibv_alloc_pd on " + dev + ": " + strerror(errno));
    rail->channel = ibv_create_comp_channel(rail->port.context);
    if (rail->channel == nullptr)
      return systemError("verbs: ibv_create_comp_channel on " + dev + ": " + strerror(errno));
    // Both fds are read without blocking: the executor polls, and sleeps in poll() instead.
    for (int fd : {rail->channel->fd, rail->port.context->async_fd}) {
      int flags = fcntl(fd, F_GETFL);
      if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        return systemError("verbs: cannot make an event fd of " + dev + " non-blocking");
    }
  }
  // User buffers are registered with one protection domain: zero copy stays on one rail.
  if (c->rails_.size() > 1 && c->config_.zeroCopy) {
    BCCL_WARN("verbs: BCCL_IB_ZERO_COPY is ignored with several devices in BCCL_IB_HCA");
    c->config_.zeroCopy = false;
  }
  c->mrCache_ = std::make_unique<VerbsMrCache>(
      c->rails_[0]->pd, static_cast<size_t>(std::max<int64_t>(1, kRegCacheMb.get())) << 20);
  BCCL_INFO("verbs: using %s, %u QP(s) per peer, %u x %u-byte slots per QP%s",
            c->describePorts().c_str(), c->config_.qps, c->config_.slots, c->config_.slotBytes,
            c->config_.zeroCopy ? ", zero-copy from BCCL_IB_ZERO_COPY_BYTES" : "");
  return c;
}

std::string VerbsContext::describePorts() const {
  std::string s;
  for (const auto& rail : rails_) s += (s.empty() ? "" : " + ") + rail->port.describe();
  return s;
}

VerbsContext::~VerbsContext() {
  if (!watched_.empty()) BCCL_WARN("verbs: context destroyed before %zu QP(s)", watched_.size());
  drainCompletionEvents();
  mrCache_.reset();
  for (auto& rail : rails_) {
    if (rail->channel != nullptr) ibv_destroy_comp_channel(rail->channel);
    if (rail->pd != nullptr) ibv_dealloc_pd(rail->pd);
    // rail->port closes the device last.
  }
}

Status VerbsContext::pollAsync(bool force) {
  const int64_t now = nowNs();
  if (!force && now - lastAsyncPollNs_ < kAsyncPollPeriodNs) return failure_;
  lastAsyncPollNs_ = now;
  for (uint32_t r = 0; r < rails_.size(); ++r) pollRailEvents(r);
  return failure_;
}

void VerbsContext::pollRailEvents(uint32_t r) {
  Rail& rail = *rails_[r];
  ibv_async_event ev;
  while (ibv_get_async_event(rail.port.context, &ev) == 0) {
    const ibv_event_type t = ev.event_type;
    switch (t) {
      case IBV_EVENT_QP_FATAL:
      case IBV_EVENT_QP_REQ_ERR:
      case IBV_EVENT_QP_ACCESS_ERR:
      case IBV_EVENT_PATH_MIG_ERR: {
        auto it = watched_.find(key(r, ev.element.qp->qp_num));
        if (it != watched_.end()) it->second->onAsyncEvent(r, ev.element.qp->qp_num, eventName(t));
        break;
      }
      case IBV_EVENT_CQ_ERR:
      case IBV_EVENT_PORT_ERR:
      case IBV_EVENT_DEVICE_FATAL: {
        if (t == IBV_EVENT_PORT_ERR && ev.element.port_num != rail.port.port) break;
        const std::string what = "verbs: " + rail.port.device + " port " +
                                 std::to_string(rail.port.port) + ": asynchronous event " +
                                 eventName(t) +
                                 (t == IBV_EVENT_PORT_ERR ? " (the link went down)" : "");
        if (r > 0) {
          // A secondary rail: its QPs fail over to the others (the primary's carry control).
          rail.down = true;
          BCCL_WARN("%s; its QPs are cut out", what.c_str());
        } else if (failure_.isOk()) {
          failure_ = systemError(what);
          BCCL_WARN("%s", failure_.message().c_str());
        }
        break;
      }
      case IBV_EVENT_PORT_ACTIVE:
        if (r > 0 && ev.element.port_num == rail.port.port && rail.down) {
          rail.down = false;
          BCCL_WARN("verbs: %s port %d is active again; its QPs will be put back",
                    rail.port.device.c_str(), rail.port.port);
        }
        break;
      default:
        BCCL_INFO("verbs: %s: asynchronous event %s", rail.port.device.c_str(), eventName(t));
    }
    ibv_ack_async_event(&ev);
  }
}

void VerbsContext::drainCompletionEvents() {
  for (auto& rail : rails_) {
    if (rail->channel == nullptr) continue;
    ibv_cq* cq = nullptr;
    void* cqContext = nullptr;
    // Acknowledged one by one and at once: ibv_destroy_cq waits for every event it delivered
    // to be acknowledged.
    while (ibv_get_cq_event(rail->channel, &cq, &cqContext) == 0) ibv_ack_cq_events(cq, 1);
  }
}

void VerbsContext::addToWaitSet(WaitSet* set) const {
  for (const auto& rail : rails_) {
    set->addFd(rail->channel->fd, POLLIN);
    set->addFd(rail->port.context->async_fd, POLLIN);
  }
}

}  // namespace bccl
