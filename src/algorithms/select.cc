// Algorithm selection. For now each collective has one algorithm; the cost-model selector of
// the topology issue replaces the switch below with a measured choice plus BCCL_ALGO.
#include <deque>
#include <string>

#include "algorithms/builders.h"
#include "algorithms/collective.h"
#include "core/dtype.h"
#include "core/params.h"

namespace bccl {
namespace {

const IntParam kChunkBytes("BCCL_CHUNK_BYTES", 256 * 1024,
                           "Pipelining granularity of ring and chain algorithms, in bytes");

}  // namespace

const char* collName(CollKind kind) {
  switch (kind) {
    case CollKind::kAllReduce: return "allreduce";
    case CollKind::kAllGather: return "allgather";
    case CollKind::kReduceScatter: return "reducescatter";
    case CollKind::kBroadcast: return "broadcast";
    case CollKind::kReduce: return "reduce";
    case CollKind::kAllToAll: return "alltoall";
    case CollKind::kSend: return "send";
    case CollKind::kRecv: return "recv";
    case CollKind::kBarrier: return "barrier";
  }
  return "?";
}

namespace {

// Whether the call is in place, as the API defines it per collective.
bool inPlaceOf(const OpArgs& a, int rank) {
  const size_t es = dtypeSize(a.dtype);
  const char* send = static_cast<const char*>(a.sendbuf);
  const char* recv = static_cast<const char*>(a.recvbuf);
  switch (a.kind) {
    case CollKind::kAllGather: return recv != nullptr && send == recv + rank * a.count * es;
    case CollKind::kReduceScatter: return send != nullptr && recv == send + rank * a.count * es;
    default: return send == recv;
  }
}

}  // namespace

StatusOr<std::shared_ptr<const CompiledSchedule>> collectiveSchedule(const OpArgs& a, int rank, int nranks,
                                                                     ScheduleCache* cache) {
  // Everything the choice and the build depend on; pointers only through in-place-ness.
  std::string key = std::to_string(static_cast<int>(a.kind)) + "/" + std::to_string(a.count) + "/" +
                    std::to_string(static_cast<int>(a.dtype)) + "/" + std::to_string(static_cast<int>(a.op)) +
                    "/" + std::to_string(a.root) + "/" + (inPlaceOf(a, rank) ? "i" : "o") + "/" +
                    std::to_string(kChunkBytes.get());
  if (cache != nullptr)
    if (auto hit = cache->find(key)) return hit;
  StatusOr<Schedule> built = buildCollectiveSchedule(a, rank, nranks);
  if (!built.isOk()) return built.status();
  std::shared_ptr<const CompiledSchedule> compiled = compileSchedule(std::move(built.value()));
  if (cache != nullptr) cache->insert(key, compiled);
  return compiled;
}

StatusOr<Schedule> buildCollectiveSchedule(const OpArgs& a, int rank, int nranks) {
  CollectiveShape shape;
  shape.rank = rank;
  shape.nranks = nranks;
  shape.count = a.count;
  shape.dtype = a.dtype;
  shape.op = a.op;
  shape.root = a.root;
  int64_t chunk = kChunkBytes.get();
  if (chunk < 64) return invalidArgument("BCCL_CHUNK_BYTES must be at least 64");
  shape.chunkBytes = static_cast<size_t>(chunk);
  shape.inPlace = inPlaceOf(a, rank);
  switch (a.kind) {
    case CollKind::kAllReduce:
      return buildRingAllReduce(shape);
    case CollKind::kAllGather:
      return buildRingAllGather(shape);
    case CollKind::kReduceScatter:
      return buildRingReduceScatter(shape);
    case CollKind::kBroadcast:
      return buildChainBroadcast(shape);
    case CollKind::kReduce:
      return buildChainReduce(shape);
    case CollKind::kAllToAll:
      return buildPairwiseAllToAll(shape);
    case CollKind::kBarrier:
      return buildDisseminationBarrier(shape);
    case CollKind::kSend:
    case CollKind::kRecv:
      return buildPointToPointSchedule({a}, rank, nranks);
  }
  return internalError("unknown collective");
}

StatusOr<Schedule> buildPointToPointSchedule(const std::vector<OpArgs>& ops, int rank, int nranks) {
  Schedule sch;
  sch.algorithm = "p2p";
  sch.rank = rank;
  sch.nranks = nranks;
  sch.numBuffers = static_cast<uint16_t>(ops.size() + 1);
  std::deque<size_t> selfSends, selfRecvs;
  for (size_t i = 0; i < ops.size(); ++i) {
    const OpArgs& op = ops[i];
    const uint16_t buf = static_cast<uint16_t>(i + 1);
    const size_t bytes = op.count * dtypeSize(op.dtype);
    if (op.peer == rank) {
      (op.kind == CollKind::kSend ? selfSends : selfRecvs).push_back(i);
      continue;
    }
    sch.add(op.kind == CollKind::kSend ? sendStep(op.peer, BufRef{buf, 0}, bytes)
                                       : recvStep(op.peer, BufRef{buf, 0}, bytes));
  }
  if (selfSends.size() != selfRecvs.size())
    return invalidUsage("a send to oneself needs a matching receive in the same group");
  for (size_t k = 0; k < selfSends.size(); ++k) {
    const OpArgs& s = ops[selfSends[k]];
    const OpArgs& r = ops[selfRecvs[k]];
    size_t bytes = s.count * dtypeSize(s.dtype);
    if (bytes != r.count * dtypeSize(r.dtype))
      return invalidUsage("send to oneself and its receive have different sizes");
    sch.add(copyStep(BufRef{static_cast<uint16_t>(selfRecvs[k] + 1), 0},
                     BufRef{static_cast<uint16_t>(selfSends[k] + 1), 0}, bytes));
  }
  return sch;
}

}  // namespace bccl
