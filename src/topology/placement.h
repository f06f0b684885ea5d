// Where ranks run within a host, and the ring order that follows from it: ranks that share a
// core (or its cache) should be ring neighbours, so a chunk one of them writes is read by the
// next while it is still in that core's cache, and the hand-over costs no cross-core traffic.
#pragma once

#include <vector>

#include "core/rendezvous.h"

namespace bccl {

// The lowest CPU this process may run on when its affinity is narrower than the CPUs online
// (a launcher bound it), else -1.
int boundCpu();
// The one CPU this process may run on, else -1 (free, or bound to several).
int onlyCpu();

// For each rank, whether it certainly runs on another CPU than `me`: on another machine, or
// both bound to one CPU each, different ones. A wait whose awaited ranks all run elsewhere may
// spin: the ranks it would yield its CPU to are not among those it waits for.
std::vector<char> ranksOnOtherCpus(const std::vector<PeerInfo>& peers, int me);

// The ring order for these ranks (grouped by host as `hosts`, each in rank order): host by
// host, and within a host by bound CPU (ties in rank order) when every rank there is bound.
// Empty when that is plain rank order. The same on every rank: it reads only what all ranks
// exchanged.
std::vector<int> ringOrderOf(const std::vector<PeerInfo>& peers,
                             const std::vector<std::vector<int>>& hosts);

}  // namespace bccl
