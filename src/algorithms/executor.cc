#include "algorithms/executor.h"

#include <sched.h>

#include <algorithm>
#include <cstring>

#include "algorithms/direct.h"
#include "algorithms/polite_wait.h"
#include "core/bulk_copy.h"
#include "core/logging.h"
#include "core/params.h"
#include "core/reduce.h"

namespace bccl {
namespace {

const IntParam kYieldPasses(
    "BCCL_YIELD_PASSES", 16,
    "Idle passes spent in sched_yield() before sleeping on a doorbell/poll");
const IntParam kSpinElsewhereUs(
    "BCCL_SPIN_ELSEWHERE_US", 50,
    "Ranks sharing CPUs: how long a wait may spin in all, instead of yielding, while every rank "
    "it awaits is bound to another CPU than its own (0: never)");

struct PeerQueue {
  int peer;
  Connection* conn;
  const std::vector<uint32_t>* sends;  // step indices in schedule order
  const std::vector<uint32_t>* recvs;
  size_t sendCursor = 0, recvCursor = 0;
  size_t outstanding = 0;  // posted, not complete
};

class PlanRun {
 public:
  explicit PlanRun(Plan* plan, uint32_t index) : plan_(plan), index_(index) {}

  bool finished() const { return finished_; }
  bool started() const { return started_; }
  Plan* plan() const { return plan_; }

  // Starts the plan when its communicator's turn comes; returns whether it started.
  bool tryStart();
  // Does everything possible without waiting; returns whether anything moved.
  bool pump();
  void fail(const Status& st);
  void addWaitHandles(WaitSet* set) const;
  // Peers this plan waits on (for timeout messages and liveness checks).
  std::vector<int> waitingOn() const;
  void checkLiveness();

 private:
  bool pumpOnce(Status* st);
  Status runLocal(uint32_t id);
  Status post(PeerQueue& q, uint32_t id);
  void complete(uint32_t id);
  char* resolve(const BufRef& ref) const { return plan_->buffers[ref.buffer] + ref.offset; }

  Plan* plan_;
  uint32_t index_;
  bool started_ = false, finished_ = false;
  std::vector<uint32_t> remaining_;
  std::vector<uint32_t> readyLocal_;
  std::vector<PeerQueue> queues_;
  std::vector<uint64_t> completedTokens_;
  size_t done_ = 0;
};

bool isLocal(StepKind k) { return k == StepKind::kCopy || k == StepKind::kScale; }

bool PlanRun::tryStart() {
  ExecContext* ctx = plan_->ctx;
  if (!ctx->isTurn(plan_->ticket)) return false;
  started_ = true;
  Status health = ctx->health();
  if (!health.isOk()) {
    fail(health);
    return true;
  }
  const CompiledSchedule& c = *plan_->compiled;
  const Schedule& s = c.schedule;
  const size_t n = s.steps.size();
  plan_->buffers.resize(std::max<size_t>(plan_->buffers.size(), s.numBuffers), nullptr);
  plan_->buffers[kScratchBuffer] = s.scratchBytes > 0 ? ctx->scratch(s.scratchBytes) : nullptr;
  if (s.scratchBytes > 0 && plan_->buffers[kScratchBuffer] == nullptr) {
    fail(systemError("cannot allocate " + std::to_string(s.scratchBytes) + " bytes of scratch"));
    return true;
  }
  remaining_.resize(n);
  for (size_t i = 0; i < n; ++i) remaining_[i] = s.steps[i].depCount;
  readyLocal_ = c.readyAtStart;
  queues_.clear();
  for (const CompiledSchedule::PeerSteps& p : c.peers) {
    Connection* conn = ctx->connection(p.peer);
    if (conn == nullptr) {
      fail(internalError("no connection to rank " + std::to_string(p.peer)));
      return true;
    }
    queues_.push_back(PeerQueue{p.peer, conn, &p.sends, &p.recvs});
  }
  if (n == 0) {
    finished_ = true;
    plan_->status = Status::ok();
    ctx->endTurn(plan_->ticket);
  }
  return true;
}

Status PlanRun::runLocal(uint32_t id) {
  const Schedule& s = plan_->compiled->schedule;
  const Step& st = s.steps[id];
  if (st.bytes == 0) return Status::ok();
  char* dst = resolve(st.dst);
  const char* src = resolve(st.src);
  if (st.kind == StepKind::kCopy) {
    const auto d = reinterpret_cast<uintptr_t>(dst), from = reinterpret_cast<uintptr_t>(src);
    if (d + st.bytes <= from || from + st.bytes <= d) {
      copyBulk(dst, src, st.bytes);
    } else if (dst != src) {
      memmove(dst, src, st.bytes);  // overlapping blocks of one buffer
    }
  } else {
    scaleDivide(dst, src, st.bytes / s.elemSize, s.dtype, s.nranks);
  }
  return Status::ok();
}

Status PlanRun::post(PeerQueue& q, uint32_t id) {
  const Schedule& s = plan_->compiled->schedule;
  const Step& st = s.steps[id];
  const uint64_t token = (static_cast<uint64_t>(index_) << 32) | id;
  ++q.outstanding;
  if (st.kind == StepKind::kSend) return q.conn->postSend(resolve(st.src), st.bytes, token);
  RecvTarget t;
  t.dst = resolve(st.dst);
  t.elemSize = s.elemSize;
  if (st.kind == StepKind::kRecvReduce) {
    t.operand = resolve(st.src);
    t.dtype = s.dtype;
    t.op = s.op;
  }
  return q.conn->postRecv(t, st.bytes, token);
}

void PlanRun::complete(uint32_t id) {
  const CompiledSchedule& c = *plan_->compiled;
  ++done_;
  if (c.queueOfStep[id] >= 0) --queues_[c.queueOfStep[id]].outstanding;
  for (uint32_t k = c.dependentsBegin[id]; k < c.dependentsBegin[id + 1]; ++k) {
    uint32_t d = c.dependents[k];
    if (--remaining_[d] == 0 && isLocal(c.schedule.steps[d].kind)) readyLocal_.push_back(d);
  }
}

bool PlanRun::pumpOnce(Status* st) {
  bool moved = false;
  while (!readyLocal_.empty()) {
    uint32_t id = readyLocal_.back();
    readyLocal_.pop_back();
    *st = runLocal(id);
    if (!st->isOk()) return true;
    complete(id);
    moved = true;
  }
  for (PeerQueue& q : queues_) {
    // Post in schedule order per peer and direction: that order is what matches messages.
    while (q.sendCursor < q.sends->size() && remaining_[(*q.sends)[q.sendCursor]] == 0) {
      *st = post(q, (*q.sends)[q.sendCursor++]);
      if (!st->isOk()) return true;
      moved = true;
    }
    while (q.recvCursor < q.recvs->size() && remaining_[(*q.recvs)[q.recvCursor]] == 0) {
      *st = post(q, (*q.recvs)[q.recvCursor++]);
      if (!st->isOk()) return true;
      moved = true;
    }
  }
  for (PeerQueue& q : queues_) {
    if (q.outstanding == 0) continue;
    completedTokens_.clear();
    *st = q.conn->progress(&completedTokens_);
    for (uint64_t token : completedTokens_) complete(static_cast<uint32_t>(token & 0xffffffffu));
    if (!st->isOk()) return true;
    moved = moved || !completedTokens_.empty();
  }
  return moved;
}

bool PlanRun::pump() {
  if (finished_) return false;
  if (!started_ && !tryStart()) return false;
  if (finished_) return true;
  bool movedAny = false;
  for (;;) {
    Status st;
    bool moved = pumpOnce(&st);
    if (!st.isOk()) {
      fail(st);
      return true;
    }
    if (done_ == plan_->compiled->schedule.steps.size()) {
      finished_ = true;
      plan_->status = Status::ok();
      plan_->ctx->endTurn(plan_->ticket);
      return true;
    }
    if (!moved) return movedAny;
    movedAny = true;
  }
}

void PlanRun::fail(const Status& st) {
  if (finished_) return;
  finished_ = true;
  for (PeerQueue& q : queues_) {
    q.conn->setFailureCause(st.failedPeer());
    q.conn->dropPending();
  }
  plan_->status = st;
  plan_->ctx->recordError(st);
  plan_->ctx->endTurn(plan_->ticket);
}

void PlanRun::addWaitHandles(WaitSet* set) const {
  for (const PeerQueue& q : queues_)
    if (q.outstanding > 0) q.conn->addToWaitSet(set);
  plan_->ctx->addWakeHandles(set);
}

std::vector<int> PlanRun::waitingOn() const {
  std::vector<int> peers;
  for (const PeerQueue& q : queues_)
    if (q.outstanding > 0 || q.recvCursor < q.recvs->size()) peers.push_back(q.peer);
  return peers;
}

void PlanRun::checkLiveness() {
  for (int peer : waitingOn()) {
    Status st = plan_->ctx->checkPeerAlive(peer);
    if (!st.isOk()) {
      fail(st);
      return;
    }
  }
}

std::string describeWait(const PlanRun& run, int64_t idleMs) {
  const Plan* p = run.plan();
  std::string who;
  for (int peer : run.waitingOn()) who += (who.empty() ? "" : ", ") + p->ctx->peerName(peer);
  return "no progress for " + std::to_string(idleMs) + " ms in " + p->compiled->schedule.algorithm +
         (who.empty() ? std::string(" (waiting for an earlier operation on this communicator)")
                      : " waiting on " + who);
}

}  // namespace

int64_t yieldPassesBeforeSleep() {
  // Read once per process: a collective's hot path reads no environment.
  static const int64_t passes = kYieldPasses.get();
  return passes;
}

int64_t spinElsewhereNs() {
  static const int64_t ns = std::max<int64_t>(0, kSpinElsewhereUs.get()) * 1000;
  return ns;
}

Status executePlan(Plan* plan) {
  if (plan->compiled->direct) return runDirectPlan(plan);
  std::vector<Plan*> one{plan};
  return executePlans(one);
}

Status executePlans(std::vector<Plan*>& plans) {
  if (plans.size() == 1 && plans[0]->compiled->direct) return runDirectPlan(plans[0]);
  std::vector<PlanRun> runs;
  runs.reserve(plans.size());
  for (size_t i = 0; i < plans.size(); ++i) runs.emplace_back(plans[i], static_cast<uint32_t>(i));
  const int64_t yieldPasses = yieldPassesBeforeSleep();
  int64_t spinNs = 0;
  for (Plan* p : plans) spinNs = std::max<int64_t>(spinNs, p->ctx->spinMicros() * 1000LL);
  int64_t lastProgressNs = nowNs(), lastLivenessNs = lastProgressNs;
  int64_t idlePasses = 0;
  WaitSet waits;

  auto pumpAll = [&runs]() {
    bool moved = false;
    for (PlanRun& r : runs) moved = r.pump() || moved;
    return moved;
  };
  auto allFinished = [&runs]() {
    return std::all_of(runs.begin(), runs.end(), [](const PlanRun& r) { return r.finished(); });
  };

  while (!allFinished()) {
    if (pumpAll()) {
      lastProgressNs = nowNs();
      idlePasses = 0;
      continue;
    }
    const int64_t now = nowNs();
    for (PlanRun& r : runs) {
      if (r.finished()) continue;
      Status health = r.plan()->ctx->health();
      if (!health.isOk()) {
        if (!r.started()) r.tryStart();  // takes the turn so later operations also fail fast
        r.fail(health);
        continue;
      }
      int64_t timeoutNs = static_cast<int64_t>(r.plan()->ctx->timeoutMs()) * 1000000;
      if (now - lastProgressNs >= timeoutNs)
        r.fail(timeoutError(describeWait(r, (now - lastProgressNs) / 1000000)));
    }
    if (now - lastLivenessNs >= kLivenessPeriodNs) {
      lastLivenessNs = now;
      for (PlanRun& r : runs)
        if (r.started() && !r.finished()) r.checkLiveness();
    }
    if (now - lastProgressNs < spinNs) {
      __builtin_ia32_pause();
      continue;
    }
    if (++idlePasses < yieldPasses) {
      sched_yield();
      continue;
    }
    waits.clear();
    for (const PlanRun& r : runs)
      if (!r.finished()) r.addWaitHandles(&waits);
    waits.arm();
    // Re-check after arming: a wake-up that came before arm() must not be slept through.
    if (pumpAll()) {
      waits.disarm();
      lastProgressNs = nowNs();
      idlePasses = 0;
      continue;
    }
    // A plan waiting for its communicator's turn has nothing to be woken by: nap briefly.
    bool awaitingTurn =
        std::any_of(runs.begin(), runs.end(), [](const PlanRun& r) { return !r.started(); });
    waits.wait(awaitingTurn ? kTurnNapUs : kMaxSleepUs);
    waits.disarm();
  }
  for (Plan* p : plans)
    if (!p->status.isOk()) return p->status;
  return Status::ok();
}

}  // namespace bccl
