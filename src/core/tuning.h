// The link costs algorithm selection uses: defaults per transport, or measured values from
// BCCL_TUNE_FILE ("key = value" lines: intra_alpha_us, intra_gbps, inter_alpha_us, inter_gbps,
// reduce_gbps; the same file on every rank, since every rank must choose alike).
#pragma once

#include <vector>

#include "algorithms/collective.h"
#include "core/comm_config.h"
#include "core/rendezvous.h"

namespace bccl {

// Whether BCCL_TUNE_FILE names a file (then nothing is measured at init).
bool tuneFileGiven();

// Ranks per CPU on the machine `machineHash` names, or 1 if no rank there reported its CPUs.
double ranksPerCpuOn(const std::vector<PeerInfo>& peers, uint64_t machineHash);
// Ranks per CPU on the most crowded machine of `peers`, at least 1 (SelectionContext).
double ranksPerCpuOf(const std::vector<PeerInfo>& peers);

StatusOr<SelectionContext> makeSelectionContext(const std::vector<PeerInfo>& peers,
                                                const CommConfig& config);

}  // namespace bccl
