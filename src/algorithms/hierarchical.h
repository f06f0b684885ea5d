// Host-aware (hierarchical) collectives, built by composing flat algorithms over subgroups of
// the communicator: the ranks of one host, or the "rail" of ranks with the same local index on
// every host. Big transfers stay on the fast intra-host link and each rail carries only 1/L of
// the data across hosts. ScheduleComposer is the reusable part: it appends a schedule built for
// a subgroup (local rank numbers, its own buffers) to the communicator-wide schedule.
#pragma once

#include <cstddef>
#include <map>
#include <vector>

#include "algorithms/builders.h"

namespace bccl {

// A rail's allreduce segment of at most this many bytes uses recursive doubling (log2 H rounds,
// whole segment each round); larger ones the pipelined ring. cost_model.cc mirrors the choice.
constexpr size_t kHierRdMaxBytes = 64 * 1024;

// Appends subgroup schedules to a parent schedule and orders them after whatever earlier steps
// touched the same bytes, so phases overlap chunk by chunk instead of waiting for each other.
class ScheduleComposer {
 public:
  // `aliases[b]` says where the parent's buffer b lives: two buffers with the same `buffer` in
  // their alias share memory (in place), at the alias offsets. Without aliases, each buffer is
  // its own memory.
  explicit ScheduleComposer(Schedule& parent, std::vector<BufRef> aliases = {});

  // Appends `sub`, built for a subgroup with local rank numbers: its peer p is global rank
  // members[p], its buffer b is the parent's `buffers[b]` (index 0 is ignored: the sub's scratch
  // gets a fresh region of the parent's scratch). Each appended step keeps its own dependencies
  // and also waits for the parent's earlier steps that wrote the bytes it touches or read the
  // bytes it writes. `sub` must not contain kScale steps unless its op is meant to divide by the
  // parent's nranks (the executor divides by the schedule's nranks).
  void append(const Schedule& sub, const std::vector<int>& members,
              const std::vector<BufRef>& buffers);
  // A local step (copy, scale) of the parent, ordered the same way; returns its index.
  uint32_t addLocal(const Step& step);

 private:
  // Who last wrote, and who read since, each byte range of one memory space.
  class Ranges {
   public:
    Ranges();
    void dependencies(size_t begin, size_t end, bool write, std::vector<uint32_t>* out) const;
    void record(size_t begin, size_t end, bool write, uint32_t step);

   private:
    struct Cell {
      size_t end;
      uint32_t writer;
      std::vector<uint32_t> readers;
    };
    std::map<size_t, Cell>::iterator split(size_t at);
    std::map<size_t, Cell> cells_;  // begin -> cell; together they cover every offset
  };

  BufRef physical(const BufRef& ref) const;
  std::vector<uint32_t> crossDependencies(const Step& step) const;
  void record(uint32_t index);

  Schedule& parent_;
  std::vector<BufRef> aliases_;
  std::map<uint16_t, Ranges> spaces_;
};

// Flat ring builders over uneven segments: rank i owns segment i = segmentOf(count, n, i).
// Reduce-scatter: buffer 1 holds `count` elements, buffer 2 is `count` long and ends with
// segment i reduced at its offset (other segments hold partial sums; in place allowed).
// Allgather: buffer 1 holds segment i's elements, buffer 2 (`count` long) ends with every
// segment; in place means buffer 1 is buffer 2 at segment i's offset.
Schedule buildRingReduceScatterSegments(const CollectiveShape& shape);
Schedule buildRingAllGatherSegments(const CollectiveShape& shape);

// Allreduce over `hosts` (the ranks of each host, each list in rank order, lists ordered by
// their lowest rank; every rank exactly once). Hosts of equal size L: reduce-scatter on each
// host, allreduce of segment i along rail i, allgather on each host. Hosts of unequal size: chain
// reduce to each host's lowest rank, allreduce among those leaders, chain broadcast on each host.
// A malformed host list builds the flat ring instead (algorithm "ring").
Schedule buildHierarchicalAllReduce(const CollectiveShape& shape,
                                    const std::vector<std::vector<int>>& hosts);

}  // namespace bccl
