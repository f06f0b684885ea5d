// Algorithm selection: BCCL_ALGO when it names an algorithm of the collective, else the one the
// alpha-beta cost model (cost_model.h) predicts fastest for this size, rank count and host
// layout. Every input of the choice is the same on every rank, so all ranks build the same
// algorithm; BCCL_DEBUG=INFO logs each distinct choice with the predictions it was made from.
#include <algorithm>
#include <cmath>
#include <deque>
#include <sstream>
#include <string>

#include "algorithms/builders.h"
#include "algorithms/builders_extra.h"
#include "algorithms/collective.h"
#include "algorithms/cost_model.h"
#include "algorithms/direct.h"
#include "algorithms/hierarchical.h"
#include "algorithms/partition.h"
#include "core/dtype.h"
#include "core/logging.h"
#include "core/params.h"

namespace bccl {
namespace {

const IntParam kChunkBytes("BCCL_CHUNK_BYTES", 256 * 1024,
                           "Pipelining granularity of every algorithm, in bytes");
const StringParam kAlgo(
    "BCCL_ALGO", "",
    "Force algorithms: one name for every collective that has it (ring, tree, "
    "rd, rhd, hier, bruck, chain; direct: the shared-memory boards, when every rank shares "
    "memory) or per collective, e.g. 'allreduce=tree;allgather=ring'. "
    "Empty: the cost model chooses. Must be the same on every rank");

using Builder = Schedule (*)(const CollectiveShape&);

struct Algorithm {
  CollKind kind;
  const char* name;
  Builder build;
};

// Every name here must be in cost_model.cc's algorithmsFor, and the other way round.
constexpr Algorithm kAlgorithms[] = {
    {CollKind::kAllReduce, "ring", buildRingAllReduce},
    {CollKind::kAllReduce, "tree", buildTreeAllReduce},
    {CollKind::kAllReduce, "rd", buildRecursiveDoublingAllReduce},
    {CollKind::kAllReduce, "rhd", buildRabenseifnerAllReduce},
    {CollKind::kAllGather, "ring", buildRingAllGather},
    {CollKind::kAllGather, "rd", buildRecursiveDoublingAllGather},
    {CollKind::kAllGather, "bruck", buildBruckAllGather},
    {CollKind::kReduceScatter, "ring", buildRingReduceScatter},
    {CollKind::kReduceScatter, "rhd", buildRecursiveHalvingReduceScatter},
    {CollKind::kBroadcast, "chain", buildChainBroadcast},
    {CollKind::kBroadcast, "tree", buildTreeBroadcast},
    {CollKind::kReduce, "chain", buildChainReduce},
    {CollKind::kReduce, "tree", buildTreeReduce},
};

// "hier" needs the communicator's hosts, so it is not a plain Builder.
bool isHierarchical(CollKind kind, const std::string& name) {
  return kind == CollKind::kAllReduce && name == "hier";
}

Builder builderFor(CollKind kind, const std::string& name) {
  for (const Algorithm& a : kAlgorithms)
    if (a.kind == kind && name == a.name) return a.build;
  return nullptr;
}

// BCCL_ALGO's name for this collective: "tree", or from "allreduce=tree;allgather=ring".
std::string forcedAlgorithm(CollKind kind, const std::string& spec) {
  if (spec.find('=') == std::string::npos) return spec;
  std::stringstream in(spec);
  std::string item;
  while (std::getline(in, item, ';')) {
    size_t eq = item.find('=');
    if (eq != std::string::npos && item.substr(0, eq) == collName(kind)) return item.substr(eq + 1);
  }
  return "";
}

// Whether the call is in place, as the API defines it per collective.
bool inPlaceOf(const OpArgs& a, int rank) {
  const size_t es = dtypeSize(a.dtype);
  const char* send = static_cast<const char*>(a.sendbuf);
  const char* recv = static_cast<const char*>(a.recvbuf);
  switch (a.kind) {
    case CollKind::kAllGather:
      return recv != nullptr && send == recv + rank * a.count * es;
    case CollKind::kReduceScatter:
      return send != nullptr && recv == send + rank * a.count * es;
    default:
      return send == recv;
  }
}

void logChoice(const OpArgs& a, const SelectionContext& ctx, const Choice& c) {
  if (logLevel() < LogLevel::kInfo || c.algorithm.empty()) return;
  std::ostringstream alts;
  for (const auto& p : c.predictions) alts << " " << p.first << "=" << p.second * 1e6 << "us";
  BCCL_INFO(
      "%s of %zu bytes on %d ranks / %zu hosts: %s (%s; predicted:%s; link costs: %s; "
      "reduce %.1f GB/s; %.3g ranks per CPU)",
      collName(a.kind), a.count * dtypeSize(a.dtype), ctx.nranks, ctx.hosts.size(),
      c.algorithm.c_str(), c.reason.c_str(), alts.str().c_str(), ctx.source.c_str(),
      ctx.reduceBytesPerSecond * 1e-9, ctx.ranksPerCpu);
}

}  // namespace

Status readSelectionParams(SelectionContext* ctx) {
  const int64_t chunk = kChunkBytes.get();
  if (chunk < 64 || chunk > (int64_t{1} << 30))
    return invalidArgument("BCCL_CHUNK_BYTES must be in 64..2^30, got " + std::to_string(chunk));
  ctx->chunkBytes = static_cast<size_t>(chunk);
  ctx->forcedAlgorithms = kAlgo.get();
  return Status::ok();
}

const char* collName(CollKind kind) {
  switch (kind) {
    case CollKind::kAllReduce:
      return "allreduce";
    case CollKind::kAllGather:
      return "allgather";
    case CollKind::kReduceScatter:
      return "reducescatter";
    case CollKind::kBroadcast:
      return "broadcast";
    case CollKind::kReduce:
      return "reduce";
    case CollKind::kAllToAll:
      return "alltoall";
    case CollKind::kSend:
      return "send";
    case CollKind::kRecv:
      return "recv";
    case CollKind::kBarrier:
      return "barrier";
  }
  return "?";
}

// What one rank gets of the machine while every rank works at once: with more ranks than CPUs,
// copies and reductions (and a shared-memory message is both) run at a share of the measured
// rates (SelectionContext::ranksPerCpu), unless the intra rate was timed with every pair at
// once (intraRateShared): that one is a share already. The network link's rate stays: the
// model already shares it among the ranks crossing at once, and the wire, not the CPU, bounds it.
struct RatesUnderLoad {
  LinkCost intra, inter;
  double reduceBytesPerSecond;
  double ranksPerCpu;  // at least 1
};

RatesUnderLoad ratesUnderLoad(const SelectionContext& ctx) {
  const double share = std::max(1.0, ctx.ranksPerCpu);
  return {LinkCost{ctx.intraAlphaSeconds,
                   ctx.intraBytesPerSecond / (ctx.intraRateShared ? 1.0 : share)},
          LinkCost{ctx.interAlphaSeconds, ctx.interBytesPerSecond},
          ctx.reduceBytesPerSecond / share, share};
}

// "direct" over the shared-memory boards, when every rank shares memory and the post fits: one
// synchronisation (one alpha, whatever the rank count), copying the post in before anyone can
// read it (no pipelining behind it), then reading what this rank needs of the others' posts,
// and combining it for reductions.
bool directFits(const OpArgs& a, const SelectionContext& ctx) {
  switch (a.kind) {
    case CollKind::kAllReduce:
    case CollKind::kReduceScatter:
    case CollKind::kAllGather:
    case CollKind::kReduce:
    case CollKind::kBroadcast:
      break;
    case CollKind::kBarrier:
      return ctx.boardBytes > 0;
    default:
      return false;
  }
  const size_t post = directPostBytes(a, ctx.nranks);
  // A larger allgather, reduce-scatter or allreduce goes an area at a time (direct.cc).
  return post > 0 &&
         (post <= ctx.boardBytes || directRoundBytes(a, ctx.nranks, ctx.boardBytes) > 0);
}

// Board rounds of a direct allgather or reduce-scatter (direct.cc): one while the post fits.
double directRounds(const OpArgs& a, const SelectionContext& ctx) {
  if (directPostBytes(a, ctx.nranks) <= ctx.boardBytes) return 1;
  const double block = static_cast<double>(a.count * dtypeSize(a.dtype));
  return std::ceil(block / static_cast<double>(directRoundBytes(a, ctx.nranks, ctx.boardBytes)));
}

// The terms of a direct collective's cost on this communicator.
struct DirectTerms {
  DirectTerms(const OpArgs& a, const SelectionContext& ctx)
      : rates(ratesUnderLoad(ctx)),
        n(ctx.nranks),
        others(n - 1),
        post(static_cast<double>(directPostBytes(a, ctx.nranks))),
        copyIn(post / rates.reduceBytesPerSecond),  // copies run at memory speed too
        alpha(ctx.intraAlphaSeconds),
        // Reading a post another CPU wrote costs what a message does; of the others, those
        // sharing my CPU (ranksPerCpu - 1 of them) wrote theirs into this CPU's cache, which
        // reads at memory speed. 8 ranks on 2 CPUs, charging every read at the message rate
        // lost allreduces of 4-8 KiB to rd, where direct was 1.2-1.4x faster.
        mine(std::min(others, rates.ranksPerCpu - 1) / std::max(others, 1.0)) {}
  double read(double bytes) const {
    return bytes * (1 - mine) / rates.intra.bytesPerSecond +
           bytes * mine / rates.reduceBytesPerSecond;
  }
  double reduce(double bytes) const { return bytes / rates.reduceBytesPerSecond; }

  RatesUnderLoad rates;
  double n, others, post, copyIn, alpha, mine;
};

// A direct allreduce as one post every rank combines whole, or in rounds (direct.cc): each
// round posts the pieces the others reduce, reduces mine, posts it and copies the others' out:
// two synchronisations, a block's reads each way, and the output written around the cache past
// the cache share (as allgather). Rounds read n/2 times less at the price of one more
// synchronisation; past the board's capacity they are the only way.
double predictDirectAllReduce(const OpArgs& a, const SelectionContext& ctx, bool inRounds) {
  const DirectTerms t(a, ctx);
  if (!inRounds)
    return t.alpha + t.copyIn + t.read(t.others * t.post) + t.reduce(t.others * t.post);
  const double rounds =
      std::ceil(t.post / static_cast<double>(directRoundBytes(a, ctx.nranks, ctx.boardBytes)));
  const double readShare =
      directOutputStreams(a.count * dtypeSize(a.dtype), ctx.cacheBytesPerRank) ? 0.5 : 1.0;
  const double block = t.post / t.n;
  return rounds * 2 * t.alpha + t.copyIn * t.others / t.n + t.read(t.others * block) +
         t.reduce(t.others * block) + readShare * t.read(t.others * block) + t.reduce(block);
}

bool directAllReduceInRounds(const OpArgs& a, const SelectionContext& ctx) {
  if (a.kind != CollKind::kAllReduce || directRoundBytes(a, ctx.nranks, ctx.boardBytes) == 0)
    return false;
  if (directPostBytes(a, ctx.nranks) > ctx.boardBytes) return true;
  return predictDirectAllReduce(a, ctx, true) < predictDirectAllReduce(a, ctx, false);
}

double predictDirect(const OpArgs& a, const SelectionContext& ctx) {
  const DirectTerms t(a, ctx);
  switch (a.kind) {
    case CollKind::kAllReduce:
      return predictDirectAllReduce(a, ctx, directAllReduceInRounds(a, ctx));
    case CollKind::kReduce:  // the root's time: it combines every post, as a one-post allreduce
      return predictDirectAllReduce(a, ctx, /*inRounds=*/false);
    case CollKind::kReduceScatter:  // my block of every other post, a board area per round
      return directRounds(a, ctx) * t.alpha + t.copyIn + t.read(t.others * t.post / t.n) +
             t.reduce(t.others * t.post / t.n);
    case CollKind::kAllGather: {  // every other post, and my own block out of my board
      // A synchronisation per board area's round (direct.cc). An output larger than the cache
      // share is written around the cache, with no read for ownership: such a copy ran 2x
      // memcpy's speed alone here (docs/measurements/shm-nontemporal-20261204.txt), so the
      // reads are charged half. 2 ranks, 64 / 256 MiB: 1.4x / 1.9x the ring's busbw, as this
      // predicts; below the share the ring, overlapping copies in and out, wins (1 MiB: 0.8x).
      // With ranks sharing CPUs it overstates direct's lead, which is large there anyway.
      const double rounds = directRounds(a, ctx);
      const double readShare = directOutputStreams(t.post * t.n, ctx.cacheBytesPerRank) ? 0.5 : 1.0;
      return rounds * t.alpha + t.copyIn + readShare * t.read(t.others * t.post) + t.reduce(t.post);
    }
    case CollKind::kBroadcast:
      return t.alpha + t.copyIn + t.read(t.post);
    default:
      return t.alpha;
  }
}

Choice chooseAlgorithm(const OpArgs& a, const SelectionContext& ctx, bool allowDirect) {
  Choice choice;
  const RatesUnderLoad rates = ratesUnderLoad(ctx);
  const LinkCost& intra = rates.intra;
  const LinkCost& inter = rates.inter;
  const size_t bytes = a.count * dtypeSize(a.dtype);
  const size_t chunk = std::max<size_t>(ctx.chunkBytes, 1);
  std::vector<Candidate> ranked =
      rankAlgorithms(a.kind, bytes, ctx.nranks, intra, inter, static_cast<int>(ctx.hosts.size()),
                     rates.reduceBytesPerSecond, chunk, ctx.allShm ? ctx.cacheBytesPerRank : 0);
  // hier's prediction from the real host sizes (rankAlgorithms assumes an even spread).
  std::vector<int> sizes;
  for (const auto& h : ctx.hosts) sizes.push_back(static_cast<int>(h.size()));
  for (Candidate& c : ranked)
    if (isHierarchical(a.kind, c.algorithm) && ctx.hosts.size() > 1)
      c.seconds = predictHierarchicalAllReduce(bytes, sizes, intra, inter,
                                               rates.reduceBytesPerSecond, chunk);
  // Listed first, so that on a tie (two ranks: one round either way) no message is sent. Against
  // direct, the message algorithms pay the schedule's fixed cost, which direct does not.
  if (allowDirect && directFits(a, ctx)) {
    for (Candidate& c : ranked) c.seconds += ctx.scheduleOverheadSeconds;
    ranked.insert(ranked.begin(), Candidate{"direct", predictDirect(a, ctx)});
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const Candidate& x, const Candidate& y) { return x.seconds < y.seconds; });
  for (const Candidate& c : ranked) choice.predictions.emplace_back(c.algorithm, c.seconds);
  const std::string forced = forcedAlgorithm(a.kind, ctx.forcedAlgorithms);
  const bool forcedDirect = forced == "direct" && allowDirect && directFits(a, ctx);
  if (!forced.empty() &&
      (builderFor(a.kind, forced) != nullptr || isHierarchical(a.kind, forced) || forcedDirect)) {
    choice.algorithm = forced;
    choice.reason = "forced by BCCL_ALGO";
  } else if (!ranked.empty()) {
    choice.algorithm = ranked.front().algorithm;
    choice.reason = "cost model";
  }
  return choice;
}

namespace {

// Builds this rank's schedule with `algorithm` (already chosen; "" for single-algorithm kinds).
StatusOr<Schedule> buildScheduleFor(const OpArgs& a, int rank, const SelectionContext& ctx,
                                    const std::string& algorithm) {
  CollectiveShape shape;
  shape.rank = rank;
  shape.nranks = ctx.nranks;
  shape.count = a.count;
  shape.dtype = a.dtype;
  shape.op = a.op;
  shape.root = a.root;
  shape.chunkBytes = ctx.chunkBytes;
  shape.ringWindow = ctx.allShm ? ringWindowChunks(ctx.nranks) : 0;
  shape.ringOrder = ctx.ringOrder;
  shape.inPlace = inPlaceOf(a, rank);
  if (isHierarchical(a.kind, algorithm)) return buildHierarchicalAllReduce(shape, ctx.hosts);
  if (Builder build = builderFor(a.kind, algorithm))  // the ring follows the order itself
    return a.kind == CollKind::kAllReduce && algorithm != "ring" ? buildInRingOrder(build, shape)
                                                                 : build(shape);
  switch (a.kind) {
    case CollKind::kAllToAll:
      return buildPairwiseAllToAll(shape);
    case CollKind::kBarrier:
      return buildDisseminationBarrier(shape);
    case CollKind::kSend:
    case CollKind::kRecv:
      return buildPointToPointSchedule({a}, rank, ctx.nranks);
    default:
      return internalError(std::string("no algorithm for ") + collName(a.kind));
  }
}

}  // namespace

StatusOr<std::shared_ptr<const CompiledSchedule>> collectiveSchedule(const OpArgs& a, int rank,
                                                                     const SelectionContext& ctx,
                                                                     ScheduleCache* cache,
                                                                     bool allowDirect) {
  // The algorithm follows from the call's shape and the communicator's fixed context, so the
  // shape alone keys the cache and a repeated call runs no cost model.
  const ScheduleKey key{static_cast<int>(a.kind),
                        static_cast<int>(a.dtype),
                        static_cast<int>(a.op),
                        a.root,
                        inPlaceOf(a, rank),
                        allowDirect,
                        a.count};
  if (cache != nullptr)
    if (auto hit = cache->find(key)) return hit;
  const Choice choice = chooseAlgorithm(a, ctx, allowDirect);
  logChoice(a, ctx, choice);
  if (choice.algorithm == "direct") {
    auto direct = std::make_shared<CompiledSchedule>();
    direct->schedule.algorithm = "direct";
    direct->direct = true;
    direct->directInRounds = directAllReduceInRounds(a, ctx);
    if (cache != nullptr) cache->insert(key, direct);
    return std::shared_ptr<const CompiledSchedule>(std::move(direct));
  }
  StatusOr<Schedule> built = buildScheduleFor(a, rank, ctx, choice.algorithm);
  if (!built.isOk()) return built.status();
  std::shared_ptr<const CompiledSchedule> compiled = compileSchedule(std::move(built.value()));
  if (cache != nullptr) cache->insert(key, compiled);
  return compiled;
}

StatusOr<Schedule> buildCollectiveSchedule(const OpArgs& a, int rank, const SelectionContext& ctx) {
  return buildScheduleFor(a, rank, ctx, chooseAlgorithm(a, ctx, /*allowDirect=*/false).algorithm);
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
