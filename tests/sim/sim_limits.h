// How far the symbolic tests sweep. Every rank count to 17 by default; BCCL_SIM_MAX_RANKS lowers
// it for sanitizer builds, where the simulator runs ~10x slower and the release build already
// covers the full sweep.
#pragma once

#include <cstdlib>

namespace bccl::sim {

inline int maxSimulatedRanks() {
  const char* env = std::getenv("BCCL_SIM_MAX_RANKS");
  int n = env != nullptr ? std::atoi(env) : 17;
  return n >= 2 && n <= 17 ? n : 17;
}

}  // namespace bccl::sim
