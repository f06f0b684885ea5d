// A collective compiled to data: the list of steps one rank performs, with the dependencies
// between them. Algorithms only build schedules; one executor runs any schedule over any
// transport, and tests can simulate schedules of all ranks symbolically with no transport.
// Buffers are referred to by index (0 = scratch, then the operation's user buffers), so a
// schedule can be built, printed and checked without memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bccl/bccl.h"

namespace bccl {

enum class StepKind : uint8_t {
  kSend,        // send bytes from src to peer
  kRecv,        // receive bytes from peer into dst
  kRecvReduce,  // receive from peer, dst = src (op) incoming
  kCopy,        // dst = src (local)
  kScale,       // dst = src / nranks (the end of an average)
};

constexpr uint16_t kScratchBuffer = 0;

struct BufRef {
  uint16_t buffer = kScratchBuffer;
  size_t offset = 0;  // bytes
};

struct Step {
  StepKind kind = StepKind::kSend;
  int peer = -1;
  BufRef src;
  BufRef dst;
  size_t bytes = 0;
  uint32_t depBegin = 0;  // into Schedule::deps
  uint32_t depCount = 0;
};

struct Schedule {
  std::string algorithm;  // e.g. "ring"
  int rank = 0;
  int nranks = 1;
  bcclDataType_t dtype = bcclUint8;
  bcclRedOp_t op = bcclSum;
  size_t elemSize = 1;
  size_t scratchBytes = 0;
  uint16_t numBuffers = 1;  // scratch + user buffers
  std::vector<Step> steps;
  std::vector<uint32_t> deps;

  // Appends a step that waits for `after` (indices of earlier steps); returns its index.
  uint32_t add(const Step& step, std::initializer_list<uint32_t> after = {});
  uint32_t add(const Step& step, const std::vector<uint32_t>& after);
  std::string describe() const;  // one line per step, for logs and test failures
  // Element `elem` of `buffer`: builders count in elements, steps address bytes.
  BufRef at(uint16_t buffer, size_t elem) const { return BufRef{buffer, elem * elemSize}; }
};

// Helpers that keep builders readable.
Step sendStep(int peer, BufRef src, size_t bytes);
Step recvStep(int peer, BufRef dst, size_t bytes);
Step recvReduceStep(int peer, BufRef dst, BufRef operand, size_t bytes);
Step copyStep(BufRef dst, BufRef src, size_t bytes);
Step scaleStep(BufRef dst, BufRef src, size_t bytes);

}  // namespace bccl
