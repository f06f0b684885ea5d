// What the kernel knows about a TCP socket's delivery: bytes the peer's TCP acknowledged and the
// smallest round trip seen. The multipath scheduler measures paths with these rather than with
// its own acknowledgements, which travel behind the peer's data in the other direction and so
// would make a busy path look slow (a queue of the peer's data is not this path's slowness).
#pragma once

#include <cstdint>

namespace bccl {

struct TcpDelivery {
  uint64_t bytesAcked = 0;  // since the connection opened
  uint64_t unacked = 0;     // written, not yet acknowledged (sent or still queued)
  int64_t minRttNs = 0;
};

// False when `fd` is not a TCP socket (e.g. a socket pair in tests) or the kernel lacks the
// fields (before 4.9).
bool readTcpDelivery(int fd, TcpDelivery* out);

}  // namespace bccl
