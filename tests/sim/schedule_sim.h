// A symbolic simulator for schedules: runs every rank's schedule with no transport, where each
// element is a record of which ranks contributed to it and which input index it came from.
// It proves an algorithm right for a shape without running it: every output element has exactly
// the right contributions, every send meets its matching receive, nothing reads memory that was
// never written, and no schedule deadlocks.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "algorithms/schedule.h"

namespace bccl::sim {

struct Sym {
  bool valid = false;
  long tag = -1;            // input element index the value derives from
  std::vector<int> counts;  // contributions per rank
  int scaled = 0;           // times divided by nranks
  bool operator==(const Sym& o) const {
    return valid == o.valid && tag == o.tag && counts == o.counts && scaled == o.scaled;
  }
};

// Where a rank's buffers live in its memory (in elements), so in-place aliasing is modelled.
struct Layout {
  size_t sendOffset = 0, sendCount = 0;
  size_t recvOffset = 0, recvCount = 0;
  size_t memoryCount = 0;
};

struct RankState {
  Schedule schedule;
  Layout layout;
  std::vector<Sym> memory;
  std::vector<Sym> scratch;
  // The barrier sends scratch bytes whose value does not matter: treat them as written.
  bool scratchHoldsTokens = false;
  // Filled by simulate(): which ranks' participation every step of this rank causally follows
  // (through its dependencies and the messages it received), whatever order steps ran in.
  std::vector<bool> knows;
};

// Runs all ranks to completion; returns "" on success or a description of the first fault.
// With seed 0 ready steps run in schedule order; otherwise in a random order, which exposes a
// receive that may overwrite memory a not-yet-run send still has to read (a missing dependency).
std::string simulate(std::vector<RankState>& ranks, uint64_t seed = 0);

// Input element `index` of rank `rank` among `nranks`.
Sym input(int rank, int nranks, long index);
std::string describe(const Sym& s);

}  // namespace bccl::sim
