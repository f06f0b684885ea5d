#include "api/launch.h"

#include <algorithm>
#include <memory>

#include "algorithms/executor.h"
#include "core/logging.h"
#include "fault/fault_inject.h"

namespace bccl {
namespace {

using PlanList = std::vector<std::unique_ptr<Plan>>;

Status fillCollectivePlan(Communicator* c, const OpArgs& a, bool alone, Plan* plan) {
  // A board ("direct") collective must be the only plan its thread runs: it waits inside.
  auto s = collectiveSchedule(a, c->rank(), c->selection(), &c->scheduleCache(), alone);
  if (!s.isOk()) return s.status();
  plan->compiled = std::move(s.value());
  plan->args = a;
  if (plan->compiled->direct) return Status::ok();  // runs from args; no schedule buffers
  plan->buffers.push_back(nullptr);                 // scratch, set at start
  plan->buffers.push_back(const_cast<char*>(static_cast<const char*>(a.sendbuf)));
  plan->buffers.push_back(static_cast<char*>(a.recvbuf));
  return Status::ok();
}

// Plans for one communicator's ops, in order; consecutive sends/receives share one plan so
// that a group's exchanges progress together.
Status planFor(bcclComm* comm, const std::vector<const PendingOp*>& ops, bool alone,
               PlanList* out) {
  Communicator* c = comm->impl.get();
  size_t i = 0;
  while (i < ops.size()) {
    auto plan = std::make_unique<Plan>();
    plan->ctx = c;
    if (isPointToPoint(ops[i]->args.kind)) {
      plan->buffers.push_back(nullptr);  // scratch, set at start
      std::vector<OpArgs> batch;
      for (; i < ops.size() && isPointToPoint(ops[i]->args.kind); ++i) {
        batch.push_back(ops[i]->args);
        const OpArgs& a = ops[i]->args;
        plan->buffers.push_back(a.kind == CollKind::kSend
                                    ? const_cast<char*>(static_cast<const char*>(a.sendbuf))
                                    : static_cast<char*>(a.recvbuf));
      }
      StatusOr<Schedule> s = buildPointToPointSchedule(batch, c->rank(), c->nranks());
      if (!s.isOk()) return s.status();
      plan->compiled = compileSchedule(std::move(s.value()));
    } else {
      BCCL_RETURN_IF_ERROR(fillCollectivePlan(c, ops[i++]->args, alone, plan.get()));
    }
    out->push_back(std::move(plan));
  }
  return Status::ok();
}

// The common call: one collective, blocking, outside a group. It runs on this thread with the
// plan on the stack: at a few hundred nanoseconds per tiny allreduce, the heap allocations of
// the general path (plan list, closure, per-communicator vectors) were a third of the time.
Status runAloneBlocking(const PendingOp& op) {
  Communicator* c = op.comm->impl.get();
  maybeInjectFault(*c, c->countOperation());
  Plan plan;
  plan.ctx = c;
  BCCL_RETURN_IF_ERROR(fillCollectivePlan(c, op.args, true, &plan));
  plan.ticket = c->takeTicket();
  op.comm->users.fetch_add(1);
  Status st = executePlan(&plan);
  op.comm->users.fetch_sub(1);
  return st;
}

// Everything else: groups, streams, point-to-point.
Status launchGeneral(const std::vector<PendingOp>& ops) {
  std::vector<bcclComm*> comms;
  for (const PendingOp& op : ops)
    if (std::find(comms.begin(), comms.end(), op.comm) == comms.end()) comms.push_back(op.comm);
  for (const PendingOp& op : ops) maybeInjectFault(*op.comm->impl, op.comm->impl->countOperation());
  auto plans = std::make_shared<PlanList>();
  for (bcclComm* comm : comms) {
    std::vector<const PendingOp*> mine;
    for (const PendingOp& op : ops)
      if (op.comm == comm) mine.push_back(&op);
    BCCL_RETURN_IF_ERROR(planFor(comm, mine, ops.size() == 1, plans.get()));
  }
  // Turns are taken only once every schedule built: a turn taken must always be ended.
  for (auto& p : *plans) p->ticket = static_cast<Communicator*>(p->ctx)->takeTicket();
  for (bcclComm* comm : comms) comm->users.fetch_add(1);

  auto run = [plans, comms]() {
    ScopedLogRank tag(comms.front()->impl->rank());  // stream threads log as the rank too
    std::vector<Plan*> raw;
    for (auto& p : *plans) raw.push_back(p.get());
    Status st = executePlans(raw);
    for (bcclComm* comm : comms) comm->users.fetch_sub(1);
    return st;
  };
  bcclStream* stream = nullptr;
  for (const PendingOp& op : ops)
    if (op.stream != nullptr) {
      stream = op.stream;
      break;
    }
  if (stream == nullptr) return run();
  // Poll the hand-offs only where every rank has a core (then the spin time is long).
  stream->impl.enqueue(run, comms.front()->impl->spinMicros() >= 10);
  return Status::ok();
}

}  // namespace

Status launchOne(const PendingOp& op) {
  if (op.stream == nullptr && !isPointToPoint(op.args.kind)) return runAloneBlocking(op);
  return launchGeneral({op});
}

Status launchOps(const std::vector<PendingOp>& ops) {
  if (ops.empty()) return Status::ok();
  if (ops.size() == 1) return launchOne(ops[0]);
  return launchGeneral(ops);
}

}  // namespace bccl
