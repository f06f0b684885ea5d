// The verbs part of bringing a communicator up: open the RDMA port, offer it in the rendezvous,
// and for each peer reached over verbs, exchange QP numbers, PSNs, addresses and the rings'
// keys over a short-lived bootstrap link (no rdma_cm), then bring the QPs up and close it.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

#include "core/comm.h"
#include "core/logging.h"
#ifdef BCCL_HAVE_VERBS
#include "transport/verbs/verbs_connection.h"
#include "transport/verbs/verbs_context.h"
#endif

namespace bccl {
#ifdef BCCL_HAVE_VERBS
namespace {

// Each verbs peer pins its rings (megabytes); RDMA clusters lift the memlock limit. Below this
// the automatic choice stays away, so a default `ulimit -l` cannot turn into a failed init.
constexpr rlim_t kAutoMinMemlock = rlim_t{1} << 30;

bool memlockAllowsAuto() {
  rlimit r{};
  return getrlimit(RLIMIT_MEMLOCK, &r) == 0 &&
         (r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= kAutoMinMemlock);
}

}  // namespace
#endif

Status Communicator::prepareVerbs(PeerInfo* mine) {
  const bool asked =
      std::find(config_.network.begin(), config_.network.end(), "verbs") != config_.network.end();
  if (!asked && !config_.automatic) return Status::ok();
#ifdef BCCL_HAVE_VERBS
  if (!asked && !memlockAllowsAuto()) {
    BCCL_INFO("verbs not offered automatically: 'ulimit -l' is below 1 GiB");
    return Status::ok();
  }
  StatusOr<std::unique_ptr<VerbsContext>> ctx = VerbsContext::create();
  if (!ctx.isOk()) {
    if (asked) return ctx.status().withContext("verbs transport");
    BCCL_INFO("verbs not offered: %s", ctx.status().message().c_str());
    return Status::ok();
  }
  // The automatic choice is conservative: soft-RoCE and soft-iWARP run the protocol in the
  // kernel over an Ethernet NIC, where plain TCP is usually at least as fast.
  if (!asked && ctx.value()->port().software) {
    BCCL_INFO(
        "verbs not offered automatically on %s: a software RDMA device (BCCL_TRANSPORT=verbs "
        "uses it)",
        ctx.value()->port().device.c_str());
    return Status::ok();
  }
  verbs_ = std::move(ctx.value());
  mine->verbsOffer = 1;
  mine->verbsLinkLayer = verbs_->port().linkLayer;
  return Status::ok();
#else
  (void)mine;
  if (asked)
    return invalidArgument(
        "transport not available: built without verbs (install libibverbs-dev and rebuild)");
  return Status::ok();
#endif
}

bool Communicator::verbsReaches(int peer) const {
  const PeerInfo& me = peers_[rank_];
  const PeerInfo& p = peers_[peer];
  return me.verbsOffer != 0 && p.verbsOffer != 0 && me.verbsLinkLayer == p.verbsLinkLayer;
}

Status Communicator::connectVerbsPeers(const std::vector<LinkWant>& wants, std::vector<int>* fds) {
  std::vector<size_t> links;
  for (size_t i = 0; i < wants.size(); ++i)
    if (wants[i].kind == ConnKind::kVerbsSetup) links.push_back(i);
  if (links.empty()) return Status::ok();
#ifdef BCCL_HAVE_VERBS
  const Deadline deadline = Deadline::afterMs(config_.timeoutMs);
  std::vector<std::unique_ptr<VerbsConnection>> conns;
  for (size_t i : links) {
    const int q = wants[i].peer;
    StatusOr<std::unique_ptr<VerbsConnection>> c =
        VerbsConnection::create(verbs_.get(), q, peerName(q));
    if (!c.isOk()) return c.status();
    conns.push_back(std::move(c.value()));
  }
  // Everything out first, then everything in: each blob fits in a socket buffer, so no order of
  // peers can deadlock.
  for (size_t k = 0; k < links.size(); ++k) {
    const int q = wants[links[k]].peer;
    BCCL_RETURN_IF_ERROR(
        sendAll((*fds)[links[k]], &conns[k]->localBlob(), sizeof(VerbsBlob), deadline, &aborted_)
            .withContext("verbs set-up with " + peerName(q)));
  }
  for (size_t k = 0; k < links.size(); ++k) {
    const int q = wants[links[k]].peer;
    VerbsBlob remote;
    BCCL_RETURN_IF_ERROR(recvAll((*fds)[links[k]], &remote, sizeof(remote), deadline, &aborted_)
                             .withContext("verbs set-up with " + peerName(q)));
    BCCL_RETURN_IF_ERROR(conns[k]->connect(remote));
  }
  // A QP must not be written to before its owner moved it to RTR: say "ready" only after that,
  // and wait for every peer's.
  const uint8_t ready = 1;
  for (size_t k = 0; k < links.size(); ++k)
    BCCL_RETURN_IF_ERROR(sendAll((*fds)[links[k]], &ready, 1, deadline, &aborted_)
                             .withContext("verbs set-up with " + peerName(wants[links[k]].peer)));
  for (size_t k = 0; k < links.size(); ++k) {
    uint8_t theirs = 0;
    BCCL_RETURN_IF_ERROR(recvAll((*fds)[links[k]], &theirs, 1, deadline, &aborted_)
                             .withContext("verbs set-up with " + peerName(wants[links[k]].peer)));
  }
  for (size_t k = 0; k < links.size(); ++k) {
    close((*fds)[links[k]]);
    (*fds)[links[k]] = -1;
    connections_[wants[links[k]].peer] = std::move(conns[k]);
  }
  return Status::ok();
#else
  (void)fds;
  return internalError("verbs requested in a build without verbs");
#endif
}

}  // namespace bccl
