// Deliberate failures for tests and demos, from BCCL_FAULT_INJECT: a chosen rank exits, is
// killed, stops, or drops its connections when it issues its Nth operation on a communicator.
//   BCCL_FAULT_INJECT="rank=2,op=50,action=kill"   (several specs separated by ';')
//   actions: kill (SIGKILL itself), exit (_exit(1)), stop (SIGSTOP itself), drop (close every
//   connection, as if its network went away), path (break one path of every connection that
//   has several: a verbs QP forced into the error state; the operation must still succeed)
#pragma once

#include <cstdint>

namespace bccl {

class Communicator;

// Called before each operation with its number (0-based) on `comm`.
void maybeInjectFault(Communicator& comm, uint64_t opIndex);

}  // namespace bccl
