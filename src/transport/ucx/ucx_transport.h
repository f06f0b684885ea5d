// UCX transport, set-up half: one UCP context and worker per communicator, whose address the
// ranks exchange through the bootstrap, and which turns a peer's address into a Connection.
// UCX then picks the wire (shared memory, cma, TCP, RDMA fabrics); UCX_TLS pins it. The header
// names no UCX type, so including it needs neither UCX's headers nor its compile flags.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "transport/transport.h"

struct ucp_context;
struct ucp_ep;
struct ucp_worker;

namespace bccl {

struct UcxLinkState;

class UcxEndpointFactory {
 public:
  static StatusOr<std::unique_ptr<UcxEndpointFactory>> create();
  // This worker's address, to be exchanged with peers (opaque bytes, at most 1024).
  const std::string& workerAddress() const { return address_; }
  // A Connection to `peer` given its worker address. peerName is for error messages.
  StatusOr<std::unique_ptr<Connection>> connect(int myRank, int peer,
                                                const std::string& peerAddress,
                                                std::string peerName);
  // Call after every Connection it made is destroyed.
  ~UcxEndpointFactory();

  UcxEndpointFactory(const UcxEndpointFactory&) = delete;
  UcxEndpointFactory& operator=(const UcxEndpointFactory&) = delete;

  // For UcxConnection: every connection of a communicator shares this worker.
  ucp_worker* worker() const { return worker_; }
  // Drains pending events and arms the worker so its event fd becomes readable when anything
  // arrives; returns that fd, or -1 when the worker cannot be armed (the waiter then naps).
  int prepareToSleep();
  // A connection could not make UCX let go of its endpoint (operations that never finish on an
  // endpoint that may not be force-closed). Destroying the worker would then abort inside UCX,
  // so the factory leaks it instead.
  void taint() { tainted_ = true; }
  // Takes over a healthy endpoint from a closing connection and starts flushing it (with PEER
  // error handling; then it is force-closed) or closing it with a flush (without). The factory
  // finishes all of them together when it goes, so a communicator's teardown waits for slow
  // peers once, not once per peer. `goodbyeRecv` (handed over too) is the receive of the
  // peer's goodbye: once it confirms that all `sent` messages arrived, the flush need not
  // finish (it may wait on a peer that has already destroyed its worker).
  void retire(ucp_ep* ep, bool peerMode, UcxLinkState* link, void* goodbyeRecv, uint32_t sent);

 private:
  struct Retired {
    ucp_ep* ep;     // still to be force-closed, or null (already closing)
    void* request;  // the flush or close in progress, or null when it finished at once
    UcxLinkState* link;
    void* goodbyeRecv;  // or null
    uint32_t sent;
  };
  bool finished(const Retired& r) const;

  UcxEndpointFactory() = default;
  void finishRetired();
  void drainGoodbyes();

  ucp_context* context_ = nullptr;
  ucp_worker* worker_ = nullptr;
  int eventFd_ = -1;
  std::string address_;
  // State the endpoint error callback and in-flight requests may touch after their Connection
  // is gone: it lives as long as the worker that could still write to it.
  std::vector<std::unique_ptr<UcxLinkState>> links_;
  std::vector<Retired> retired_;
  bool tainted_ = false;
  bool peerModeUnreachable_ = false;  // auto mode found no transport with peer error handling
};

}  // namespace bccl
