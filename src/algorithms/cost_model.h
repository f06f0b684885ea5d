// Alpha-beta-gamma estimates of how long each algorithm takes, so selection can pick by message
// size, rank count and topology instead of by a fixed table: a message costs alpha plus bytes
// over bandwidth on the link it crosses, a local reduction bytes over the reduction rate.
// Ranks are assumed numbered host by host (hosts of equal size), which is how communicators are
// usually built; a round whose pairs may cross hosts pays the slower of the two links.
//
// The numbers are estimates for ranking, not promises: every algorithm is modelled with the same
// simplifications (messages of one round overlap, pipelining hides all but one chunk per hop), so
// the comparison is fair even where the absolute figure is off.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "algorithms/collective.h"

namespace bccl {

struct LinkCost {
  double alphaSeconds = 0;    // per message, start to first byte
  double bytesPerSecond = 1;  // one rank's sustained transfer rate over this link
};

// Starting points to calibrate with bench/perf on the target machine.
constexpr LinkCost kDefaultIntraHostLink{2e-6, 6e9};     // shared memory
constexpr LinkCost kDefaultInterHostLink{25e-6, 1.1e9};  // TCP over 10 GbE
constexpr double kDefaultReduceBytesPerSecond = 8e9;     // one core, AVX2, memory-bound
constexpr size_t kDefaultPipelineChunkBytes = 256 * 1024;

// `bytes` is count * element size, with count as the API defines it for the collective (the
// whole buffer for allreduce, broadcast and reduce; one rank's block for allgather and
// reduce-scatter). Local copies are charged at the reduction rate (both are memory-bound
// passes). Returns +infinity for an algorithm that does not implement `kind` (or an unknown
// name), 0 when there is nothing to move (one rank or no bytes). `cacheBytesPerRank` is each
// rank's share of the last-level cache: an algorithm that reads data again after touching more
// than that since it wrote it pays one more memory-bound pass for it (0: never).
double predictSeconds(CollKind kind, const std::string& algorithm, size_t bytes, int nranks,
                      const LinkCost& intra, const LinkCost& inter, int hosts,
                      double reduceBytesPerSecond = kDefaultReduceBytesPerSecond,
                      size_t chunkBytes = kDefaultPipelineChunkBytes, size_t cacheBytesPerRank = 0);

struct Candidate {
  std::string algorithm;
  double seconds = 0;
};

// "hier" (allreduce) with the actual host sizes; predictSeconds assumes n spread as evenly as
// possible over `hosts`. Equal sizes L: reduce-scatter on the host, allreduce of s/L along each
// rail (the L rails of a host share its network link), allgather on the host. Unequal sizes:
// chain reduce to a leader, allreduce of s among the leaders, chain broadcast. The phases are
// added up: the builder's chunk-by-chunk overlap of phases is not credited.
double predictHierarchicalAllReduce(size_t bytes, const std::vector<int>& hostSizes,
                                    const LinkCost& intra, const LinkCost& inter,
                                    double reduceBytesPerSecond = kDefaultReduceBytesPerSecond,
                                    size_t chunkBytes = kDefaultPipelineChunkBytes);

// The algorithm names that implement `kind` ("ring", "tree", "rd", "rhd", "hier", "bruck",
// "chain"), in a fixed order; empty for collectives with a single algorithm (alltoall, barrier,
// p2p). "hier" comes last so that on one host, where it costs what the ring does, ring wins.
const std::vector<std::string>& algorithmsFor(CollKind kind);

// Every algorithm implementing `kind` with its prediction, fastest first (ties keep the order
// of algorithmsFor, so every rank ranks identically).
std::vector<Candidate> rankAlgorithms(CollKind kind, size_t bytes, int nranks,
                                      const LinkCost& intra, const LinkCost& inter, int hosts,
                                      double reduceBytesPerSecond = kDefaultReduceBytesPerSecond,
                                      size_t chunkBytes = kDefaultPipelineChunkBytes,
                                      size_t cacheBytesPerRank = 0);

}  // namespace bccl
