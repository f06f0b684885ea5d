// Which path carries the next chunk. Paths pull chunks while they have room in their window, so
// each carries what it can deliver; near the end of a transfer a chunk goes to a slow path only
// if it would arrive there before the whole remaining transfer could finish over all paths
// together (earliest-completion-first), so a slow path never holds the last piece. Pure
// functions over a snapshot of the paths: unit-tested without sockets, shared by every
// transport whose connections have several paths.
#pragma once

#include <cstdint>
#include <vector>

namespace bccl {

struct PathLoad {
  bool up = false;        // carries traffic: counts towards the joint finish time
  bool ready = false;     // may take a new chunk now (not busy writing the previous one)
  uint64_t inflight = 0;  // bytes handed to the path and not yet acknowledged
  double rate = 0;        // delivery rate in bytes/s; 0 while unmeasured
  uint64_t window = 0;    // most bytes it may have in flight
};

// The path for the next chunk of `chunk` bytes when `backlog` bytes (this chunk included) wait
// to be sent; -1 to wait for a better path to get room. Small messages (backlog == chunk) go to
// the path that would deliver them first: an idle fast path. Ties go to the lowest index.
int pickPath(const std::vector<PathLoad>& paths, uint64_t chunk, uint64_t backlog);

// How many bytes a path may keep in flight: enough to fill it for two round trips plus a margin
// for acknowledgement delays (at least the bandwidth-delay product), but little more, so that a
// path that slows down drains its queue quickly. Unmeasured paths get `minWindow`.
uint64_t pathWindow(double rate, int64_t minRttNs, uint64_t minWindow, uint64_t maxWindow);

}  // namespace bccl
