// What the opaque public handles are. A bcclComm counts the calls and queued stream work that
// use it, so Destroy and Abort free it only when nothing still runs on it.
#pragma once

#include <atomic>
#include <memory>

#include "core/comm.h"
#include "core/stream.h"

struct bcclComm {
  std::unique_ptr<bccl::Communicator> impl;
  std::atomic<int> users{0};
};

struct bcclStream {
  bccl::Stream impl;
};
