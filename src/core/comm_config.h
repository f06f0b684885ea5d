// The communicator's settings, resolved once at init from bcclConfig_t, then the environment,
// then defaults. Bad values are rejected with bcclInvalidArgument, not silently ignored.
#pragma once

#include "bccl/bccl.h"
#include "core/status.h"

namespace bccl {

struct CommConfig {
  int timeoutMs = 300000;
  bool allowShm = true;
  bool allowTcp = true;
};

StatusOr<CommConfig> resolveConfig(const bcclConfig_t* config);

}  // namespace bccl
