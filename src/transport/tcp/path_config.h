// What a rank's TCP paths are and how they behave, from the BCCL_* parameters: which local
// addresses (BCCL_SOCKET_IFNAME's interfaces or addresses, BCCL_NUM_PATHS of them), the chunk
// size, the failure deadline, the window cap and the socket buffer size.
#pragma once

#include <vector>

#include "core/rendezvous.h"
#include "core/socket.h"
#include "core/status.h"
#include "transport/tcp/multipath_connection.h"

namespace bccl {

// Local address of each path, in path order. One path means exactly today's single socket from
// `routeSource` (the address this process reaches the rendezvous from). Several paths use
// BCCL_SOCKET_IFNAME's entries in turn (several sockets per entry when BCCL_NUM_PATHS exceeds
// them), or `routeSource` for all when it is not set.
StatusOr<std::vector<SockAddr>> localPathAddresses(const SockAddr& routeSource);

StatusOr<MultipathOptions> multipathOptions();

// BCCL_SOCKET_BUFFER_BYTES for data sockets (0: leave them to the kernel's autotuning).
void applySocketBuffers(int fd);

}  // namespace bccl
