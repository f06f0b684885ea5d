// Measures the alpha-beta link costs the algorithm selector uses, once, when a communicator is
// created: ranks pair up within each host and across hosts, time small and large exchanges
// (both directions at once, as a collective's step moves data), and time the reduction kernel;
// an allreduce then averages everything so that every rank holds identical costs and so makes
// identical choices. A few milliseconds per communicator; BCCL_CALIBRATE=0 keeps the defaults,
// and BCCL_TUNE_FILE (measured offline) wins over both.
#pragma once

#include "algorithms/collective.h"
#include "core/status.h"

namespace bccl {

class Communicator;

bool calibrationWanted();  // BCCL_CALIBRATE, and no BCCL_TUNE_FILE
Status calibrateLinkCosts(Communicator* comm, SelectionContext* ctx);
// Children of a communicator (shrink, split) reuse its measured costs: no new measurement.
void copyLinkCosts(const SelectionContext& from, SelectionContext* to);

}  // namespace bccl
