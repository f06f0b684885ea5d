// The communicator's settings, resolved once at init from bcclConfig_t, then the environment,
// then defaults. Bad values are rejected with bcclInvalidArgument, not silently ignored.
#pragma once

#include <string>
#include <vector>

#include "bccl/bccl.h"
#include "core/status.h"

namespace bccl {

struct CommConfig {
  int timeoutMs = 300000;
  bool allowShm = true;
  // Transports between hosts (and between ranks of one host when shm is not allowed), most
  // preferred first: "tcp", "ucx".
  std::vector<std::string> network{"tcp"};
  // No transport list was given: verbs may be chosen for peers on other hosts when both ends
  // have a hardware RDMA port (see Communicator::networkTransportFor).
  bool automatic = true;
};

StatusOr<CommConfig> resolveConfig(const bcclConfig_t* config);

}  // namespace bccl
