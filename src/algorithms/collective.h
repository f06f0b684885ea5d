// One operation as the API received it, before any algorithm is chosen.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "algorithms/compiled_schedule.h"
#include "algorithms/schedule.h"
#include "bccl/bccl.h"
#include "core/status.h"

namespace bccl {

enum class CollKind {
  kAllReduce,
  kAllGather,
  kReduceScatter,
  kBroadcast,
  kReduce,
  kAllToAll,
  kSend,
  kRecv,
  kBarrier
};

const char* collName(CollKind kind);
inline bool isPointToPoint(CollKind k) { return k == CollKind::kSend || k == CollKind::kRecv; }

struct OpArgs {
  CollKind kind = CollKind::kBarrier;
  const void* sendbuf = nullptr;
  void* recvbuf = nullptr;
  size_t count = 0;
  bcclDataType_t dtype = bcclUint8;
  bcclRedOp_t op = bcclSum;
  int root = 0;   // rooted collectives
  int peer = -1;  // send / recv
};

// What algorithm selection knows about a communicator. Every field must be the same on every
// rank, so that all ranks choose, and build, the same algorithm.
struct SelectionContext {
  int nranks = 1;
  std::vector<std::vector<int>> hosts{{0}};                    // ranks of each host, in rank order
  double intraAlphaSeconds = 2e-6, intraBytesPerSecond = 6e9;  // between ranks of one host
  double interAlphaSeconds = 25e-6, interBytesPerSecond = 1.1e9;  // between hosts
  double reduceBytesPerSecond = 8e9;
  // What running a schedule of messages costs once per operation (taking the turn, starting the
  // plan, finishing it), beyond its rounds: every message algorithm pays it alike, the boards'
  // "direct" path does not (one post, one wait). Measured at init: rounds as separate schedules
  // against the same rounds in one.
  double scheduleOverheadSeconds = 1e-6;
  // Each rank's share of its host's last-level cache, the smallest over hosts (0: unknown).
  size_t cacheBytesPerRank = 0;
  // Ranks per CPU on the most crowded machine, at least 1. During a collective every rank works
  // at once, so with 8 ranks on 2 CPUs each reduces at a quarter of the rate one rank alone
  // measured, and the model divides that rate (and an intra rate not timed under load) by this.
  // 8 ranks here, per KiB of allreduce: rd 2.6-3.1 us, Rabenseifner 1.4-1.8 us, against the
  // uncontended 0.7 and 0.3 predicted; with the factor both come out within 15%.
  double ranksPerCpu = 1;
  // The intra rate was measured with every rank moving at once (calibrate.cc, when ranks share
  // CPUs): it is already one rank's share, and the model does not divide it again.
  bool intraRateShared = false;
  std::string source = "defaults";  // where the link costs came from
  // Read once at init (BCCL_ALGO, BCCL_CHUNK_BYTES), so a collective reads no environment.
  std::string forcedAlgorithms;
  size_t chunkBytes = 256 * 1024;
  // Capacity of each rank's shared-memory board when every rank shares memory (0: no boards),
  // which makes the "direct" algorithm available for collectives whose post fits.
  size_t boardBytes = 0;
  // Every rank reaches every other over shared memory. Then the ring moves its chunks in small
  // windows, forwarding each from cache, and the cost model counts cache misses. Over a network
  // link the deepest pipeline matters more: a window's last chunks wait for their reduction
  // while the next window's could be on the wire (2-rank verbs allreduce: 1.2x slower windowed).
  bool allShm = false;
  // The flat rings' order (empty: rank order): host by host, and within a host by the CPU each
  // rank is bound to, so that ranks sharing a core (or a cache) are neighbours. Round-robin
  // binding otherwise puts every ring edge across cores: a 4-rank 256 MiB ring allreduce on 2
  // cores moved 2.6-3.2 GB/s so, against 3.6-3.9 with neighbours on one core.
  std::vector<int> ringOrder;
};

// Fills the selection parameters of `ctx` from the environment; rejects bad values.
Status readSelectionParams(SelectionContext* ctx);

// Chooses the algorithm for one collective (BCCL_ALGO, else the cost model) and builds this
// rank's schedule. Buffer 1 is the send buffer, 2 the receive buffer.
StatusOr<Schedule> buildCollectiveSchedule(const OpArgs& args, int rank,
                                           const SelectionContext& ctx);
// The same, compiled, from `cache` when the same call shape was seen before (cache may be null).
// With `allowDirect` (the call is not part of a group) the result may be a step-less schedule
// marked direct, to be run by runDirectPlan.
StatusOr<std::shared_ptr<const CompiledSchedule>> collectiveSchedule(const OpArgs& args, int rank,
                                                                     const SelectionContext& ctx,
                                                                     ScheduleCache* cache,
                                                                     bool allowDirect = false);
// The algorithm the selector would use, with every alternative's predicted seconds (best
// first), and why ("forced by BCCL_ALGO" or "cost model"). Empty for single-algorithm kinds.
struct Choice {
  std::string algorithm;
  std::string reason;
  std::vector<std::pair<std::string, double>> predictions;
};
// `allowDirect` false leaves out "direct" (for callers that need a schedule).
Choice chooseAlgorithm(const OpArgs& args, const SelectionContext& ctx, bool allowDirect = true);
// Whether a direct allreduce runs in reduce-scatter and allgather rounds (direct.cc) rather than
// as one post every rank combines: past the board's capacity, or where the model prices the
// rounds lower.
bool directAllReduceInRounds(const OpArgs& args, const SelectionContext& ctx);
// One schedule for a batch of sends and receives launched together (a group); buffer i + 1 is
// ops[i]'s buffer. Sends to and receives from oneself are matched locally, in order.
StatusOr<Schedule> buildPointToPointSchedule(const std::vector<OpArgs>& ops, int rank, int nranks);

}  // namespace bccl
