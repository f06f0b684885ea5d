// Reliable-connected queue pairs: creation and the INIT -> RTR -> RTS bring-up from the peer's
// QP number, PSN and address (GID for RoCE, LID for InfiniBand) as exchanged through the
// bootstrap, the way NCCL does it without rdma_cm. Timeouts and retries are parameters, so a
// lossy or slow fabric can be accommodated without a rebuild.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <string>

#include "core/status.h"
#include "transport/verbs/verbs_device.h"
#include "transport/verbs/verbs_wire.h"

namespace bccl {

struct VerbsQpCaps {
  uint32_t sendWr = 0;
  uint32_t recvWr = 0;
};

// A new RC QP on `cq` (both directions), moved to INIT with remote-write access.
StatusOr<ibv_qp*> createRcQp(const VerbsPort& port, ibv_pd* pd, ibv_cq* cq,
                             const VerbsQpCaps& caps);

// INIT -> RTR -> RTS towards the peer's QP (remoteQp.addr: its port). `localPsn` is ours (sent
// to the peer in its blob).
Status connectRcQp(ibv_qp* qp, const VerbsPort& port, uint32_t localPsn,
                   const VerbsQpBlob& remoteQp, const std::string& peerName);

// How the peer reaches `port`.
VerbsAddress addressOf(const VerbsPort& port);

// Takes a failed QP back to INIT (through RESET, which discards its queues), ready for
// connectRcQp again.
Status resetRcQp(ibv_qp* qp, const VerbsPort& port, const std::string& peerName);

// Moves a QP to the error state: outstanding work is flushed and the QP accepts nothing more.
void errorRcQp(ibv_qp* qp);

// A random 24-bit packet sequence number.
uint32_t randomPsn();

}  // namespace bccl
