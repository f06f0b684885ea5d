// UCX set-up: the context, the worker, its address and endpoints. Contexts are created and
// destroyed under one process-wide lock because ranks that are threads of one process each
// build their own, and UCX's global initialisation is not documented as thread-safe.
#include "transport/ucx/ucx_transport.h"

#include <ucp/api/ucp.h>

#include <chrono>
#include <cstdlib>
#include <mutex>

#include "core/logging.h"
#include "core/params.h"
#include "transport/ucx/ucx_connection.h"

namespace bccl {
namespace {

const StringParam kErrorMode(
    "BCCL_UCX_ERROR_MODE", "auto",
    "UCX endpoint error handling: peer (UCX reports dead peers; UCX 1.13 then excludes its "
    "shared-memory transports), none (any transport; dead peers are found by bccl's own "
    "checks), auto (peer where some transport supports it, else none)");

constexpr size_t kMaxAddressBytes = 1024;
// prepareToSleep: rounds of draining before giving up on arming, and passes per drain.
constexpr int kArmAttempts = 8;
constexpr int kDrainPasses = 256;
// How long teardown waits for retired endpoints' flushes: a peer that is alive but busy
// elsewhere does not progress them.
constexpr int kRetireTimeoutMs = 1000;

std::mutex& setupMutex() {
  static std::mutex m;
  return m;
}

// Failures at set-up are usually a UCX_TLS naming nothing usable here: say what it was.
std::string setupError(const std::string& what, ucs_status_t st) {
  const char* tls = getenv("UCX_TLS");
  return "ucx: " + what + ": " + ucs_status_string(st) +
         (tls != nullptr ? std::string(" (UCX_TLS=") + tls + ")" : std::string());
}

}  // namespace

StatusOr<std::unique_ptr<UcxEndpointFactory>> UcxEndpointFactory::create() {
  std::lock_guard<std::mutex> lock(setupMutex());
  std::unique_ptr<UcxEndpointFactory> f(new UcxEndpointFactory());
  ucp_config_t* config = nullptr;
  // Reads UCX_* from the environment (UCX_TLS among them), so users pin transports as usual.
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) return systemError(setupError("cannot read the configuration", st));
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  // WAKEUP gives the worker an event fd, so an idle executor can sleep instead of spinning.
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_WAKEUP;
  st = ucp_init(&params, config, &f->context_);
  ucp_config_release(config);
  if (st != UCS_OK) {
    f->context_ = nullptr;
    return systemError(setupError("cannot create a context", st));
  }
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  // One thread at a time, though not always the same one: set-up runs on the caller, the
  // executor on the caller or a stream thread. UCX takes no locks in this mode either.
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  st = ucp_worker_create(f->context_, &wp, &f->worker_);
  if (st != UCS_OK) {
    f->worker_ = nullptr;
    return systemError(setupError("cannot create a worker", st));
  }
  if (ucp_worker_get_efd(f->worker_, &f->eventFd_) != UCS_OK) f->eventFd_ = -1;
  ucp_address_t* address = nullptr;
  size_t length = 0;
  st = ucp_worker_get_address(f->worker_, &address, &length);
  if (st != UCS_OK) return systemError(setupError("cannot get the worker address", st));
  f->address_.assign(reinterpret_cast<const char*>(address), length);
  ucp_worker_release_address(f->worker_, address);
  if (length > kMaxAddressBytes)
    return systemError("ucx: the worker address takes " + std::to_string(length) +
                       " bytes, more than the " + std::to_string(kMaxAddressBytes) +
                       " the bootstrap carries: narrow UCX_TLS or UCX_NET_DEVICES");
  return f;
}

UcxEndpointFactory::~UcxEndpointFactory() {
  std::lock_guard<std::mutex> lock(setupMutex());
  if (worker_ != nullptr) finishRetired();
  if (tainted_) {
    BCCL_WARN(
        "ucx: an endpoint with operations UCX never finished could not be closed; "
        "leaking the UCX worker rather than destroying it under them");
    return;
  }
  if (worker_ != nullptr) {
    drainGoodbyes();
    ucp_worker_destroy(worker_);
  }
  if (context_ != nullptr) ucp_cleanup(context_);
  // links_ go last: the worker could write to them until it was destroyed.
}

StatusOr<std::unique_ptr<Connection>> UcxEndpointFactory::connect(int myRank, int peer,
                                                                  const std::string& peerAddress,
                                                                  std::string peerName) {
  if (myRank < 0 || peer < 0 || myRank > kUcxMaxRank || peer > kUcxMaxRank)
    return invalidArgument("ucx transport supports ranks up to " + std::to_string(kUcxMaxRank));
  if (peerAddress.empty() || peerAddress.size() > kMaxAddressBytes)
    return invalidArgument(peerName + ": malformed ucx worker address (" +
                           std::to_string(peerAddress.size()) + " bytes)");
  const std::string mode = kErrorMode.get();
  if (mode != "auto" && mode != "peer" && mode != "none")
    return invalidArgument("BCCL_UCX_ERROR_MODE must be auto, peer or none, not '" + mode + "'");
  links_.push_back(std::make_unique<UcxLinkState>());
  UcxLinkState* link = links_.back().get();
  ucp_ep_params_t p{};
  p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                 UCP_EP_PARAM_FIELD_ERR_HANDLER;
  p.address = reinterpret_cast<const ucp_address_t*>(peerAddress.data());
  p.err_handler.cb = ucxEndpointFailed;
  p.err_handler.arg = link;
  ucp_ep_h ep = nullptr;
  ucs_status_t st = UCS_ERR_UNREACHABLE;
  // PEER mode: a dead or vanished peer fails the endpoint (and its requests) instead of
  // hanging. UCX 1.13's shared-memory transports cannot do that, so where they are all that
  // reaches the peer, fall back to NONE: a dead local peer is then found by the communicator's
  // liveness check (/proc) and a closing one by our goodbye message.
  bool peerMode = mode != "none" && !peerModeUnreachable_;
  if (peerMode) {
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    st = ucp_ep_create(worker_, &p, &ep);
  }
  if (st == UCS_ERR_UNREACHABLE && mode != "peer") {
    if (peerMode) {
      BCCL_INFO("ucx: no transport to %s handles peer failures; using error mode none",
                peerName.c_str());
      // Remembered, so UCX reports its selection failure once per communicator, not per peer.
      peerModeUnreachable_ = true;
      peerMode = false;
    }
    p.err_mode = UCP_ERR_HANDLING_MODE_NONE;
    st = ucp_ep_create(worker_, &p, &ep);
  }
  if (st != UCS_OK)
    return remoteError(peerName + ": cannot create a ucx endpoint: " + ucs_status_string(st))
        .blaming(peer);
  return std::unique_ptr<Connection>(
      new UcxConnection(this, link, ep, peerMode, myRank, peer, std::move(peerName)));
}

int UcxEndpointFactory::prepareToSleep() {
  if (eventFd_ < 0) return -1;
  // UCX only signals the fd for events that arrive after arming, and refuses to arm (BUSY)
  // while unprocessed events remain, so drain, arm, and retry. Completions found while
  // draining are picked up by the executor's re-check, which then does not sleep.
  for (int attempt = 0; attempt < kArmAttempts; ++attempt) {
    for (int i = 0; i < kDrainPasses && ucp_worker_progress(worker_) != 0; ++i) {
    }
    ucs_status_t st = ucp_worker_arm(worker_);
    if (st == UCS_OK) return eventFd_;
    if (st != UCS_ERR_BUSY) return -1;
  }
  // Events keep arriving: make the fd readable so the waiter re-checks instead of sleeping.
  ucp_worker_signal(worker_);
  return eventFd_;
}

void UcxEndpointFactory::retire(ucp_ep* ep, bool peerMode, UcxLinkState* link, void* goodbyeRecv,
                                uint32_t sent) {
  ucp_request_param_t param{};
  ucs_status_ptr_t r;
  if (peerMode) {
    r = ucp_ep_flush_nbx(ep, &param);
  } else {
    // Without PEER error handling only a flushing close is allowed.
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = 0;
    r = ucp_ep_close_nbx(ep, &param);
  }
  retired_.push_back(
      Retired{peerMode ? ep : nullptr, UCS_PTR_IS_ERR(r) ? nullptr : r, link, goodbyeRecv, sent});
}

bool UcxEndpointFactory::finished(const Retired& r) const {
  if (r.request == nullptr || ucp_request_check_status(r.request) != UCS_INPROGRESS) return true;
  if (r.ep == nullptr) return false;  // a flushing close: only UCX can end it
  if (r.link->failed) return true;
  // The peer's goodbye says what it received: if that is everything, nothing is in flight.
  return r.goodbyeRecv != nullptr && ucp_request_check_status(r.goodbyeRecv) == UCS_OK &&
         static_cast<int32_t>(static_cast<uint32_t>(r.link->goodbyeIn.received) - r.sent) >= 0;
}

void UcxEndpointFactory::finishRetired() {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kRetireTimeoutMs);
  auto pending = [this]() {
    for (const Retired& r : retired_)
      if (!finished(r)) return true;
    return false;
  };
  while (pending() && std::chrono::steady_clock::now() < deadline) ucp_worker_progress(worker_);
  for (Retired& r : retired_) {
    if (r.ep == nullptr && !finished(r))
      tainted_ = true;  // a flushing close that never finished: UCX still owns that endpoint
    if (r.request != nullptr) ucp_request_free(r.request);
    if (r.goodbyeRecv != nullptr) {
      ucp_request_cancel(worker_, r.goodbyeRecv);
      ucp_request_free(r.goodbyeRecv);
    }
    if (r.ep == nullptr) continue;
    // Flushed, confirmed by the peer, or given up on: a forced close releases it at once.
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t c = ucp_ep_close_nbx(r.ep, &param);
    if (c == nullptr || UCS_PTR_IS_ERR(c)) continue;
    for (int i = 0; i < kDrainPasses && ucp_request_check_status(c) == UCS_INPROGRESS; ++i)
      ucp_worker_progress(worker_);
    ucp_request_free(c);
  }
  retired_.clear();
}

void UcxEndpointFactory::drainGoodbyes() {
  // Goodbyes that arrived after their receiver was gone would make UCX warn at destruction
  // about unmatched messages; consume them (they are small, eager, and already here).
  for (int i = 0; i < kDrainPasses && ucp_worker_progress(worker_) != 0; ++i) {
  }
  UcxGoodbye sink;
  ucp_tag_recv_info_t info{};
  while (ucp_tag_message_h msg =
             ucp_tag_probe_nb(worker_, kUcxControlBit, kUcxControlBit, 1, &info)) {
    ucp_request_param_t param{};
    ucs_status_ptr_t r = ucp_tag_msg_recv_nbx(worker_, &sink, sizeof(sink), msg, &param);
    if (UCS_PTR_IS_ERR(r)) break;
    if (r == nullptr) continue;
    for (int i = 0; i < kDrainPasses && ucp_request_check_status(r) == UCS_INPROGRESS; ++i)
      ucp_worker_progress(worker_);
    ucp_request_free(r);
  }
}

}  // namespace bccl
