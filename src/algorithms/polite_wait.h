// How every blocking wait of the executor side waits: spin for the communicator's spin time
// (long when each rank has a core, none when ranks share cores), then yield a few times,
// then sleep on the communicator's wake handles (its shm doorbell, its abort eventfd) in bounded
// slices. It never waits unboundedly: it checks the communicator's health, asks every liveness
// period whether the ranks it waits for are alive, and gives up after the communicator's
// timeout without progress, naming whom it waited for.
#pragma once

#include <sched.h>

#include <cstdint>
#include <string>
#include <vector>

#include "algorithms/exec_context.h"
#include "core/deadline.h"
#include "core/status.h"
#include "transport/wait_set.h"

namespace bccl {

constexpr int kMaxSleepUs = 20000;
constexpr int kTurnNapUs = 500;  // waiting for a turn: nothing rings, so nap briefly
constexpr int64_t kLivenessPeriodNs = 20 * 1000000LL;

int64_t yieldPassesBeforeSleep();  // BCCL_YIELD_PASSES, read once per process
int64_t spinElsewhereNs();         // BCCL_SPIN_ELSEWHERE_US, read once per process

// Spins until done() or `budgetNs` has passed; returns the time spent.
template <class Done>
int64_t spinFor(Done done, int64_t budgetNs) {
  const int64_t start = nowNs();
  for (int i = 1;; ++i) {
    __builtin_ia32_pause();
    if (done()) break;
    if (i % 16 == 0 && nowNs() - start >= budgetNs) break;
  }
  return nowNs() - start;
}

// Waits until done() is true. `waitingFor()` returns the ranks still awaited (called rarely:
// for liveness checks and the timeout message); `what` completes "no progress ... waiting for".
// Sleeps on `bell` when given (whoever makes done() true rings it; the communicator rings it
// too when it fails or is aborted), else on the communicator's wake handles.
// `awaitedElsewhere()`: every rank still awaited runs on another CPU (ExecContext::
// runsOnOtherCpu). Then, even when ranks share CPUs, the wait spins (up to spinElsewhereNs() in
// all) instead of yielding: the ranks it would hand its CPU to have nothing it waits for, and a
// yield costs a round of their context switches (8 ranks on 2 CPUs: about 2.4 us each here)
// before it looks again, while the awaited post may come from the other CPU any moment.
template <class Done, class WaitingFor, class AwaitedElsewhere>
Status waitPolitely(ExecContext* ctx, Done done, WaitingFor waitingFor,
                    AwaitedElsewhere awaitedElsewhere, int sleepSliceUs, const char* what,
                    Doorbell* bell = nullptr) {
  if (done()) return Status::ok();
  // done() after every pause: on AMD Zen a pause lasts about 65 cycles, so checking only every
  // 64 pauses added up to a microsecond and more to noticing the peer. The clock is read less
  // often than done(), which is a few loads, and not at all by a wait that ends within the
  // first pauses (a tiny collective's usual case).
  int64_t start = 0;
  const int64_t spinNs = ctx->spinMicros() * 1000LL;
  for (int i = 1; spinNs > 0; ++i) {
    __builtin_ia32_pause();
    if (done()) return Status::ok();
    if (i % 16 == 0) {
      const int64_t now = nowNs();
      if (start == 0) start = now;
      if (now - start >= spinNs) break;
    }
  }
  if (start == 0) start = nowNs();
  const int64_t yieldPasses = yieldPassesBeforeSleep();
  const int64_t timeoutNs = static_cast<int64_t>(ctx->timeoutMs()) * 1000000;
  int64_t lastLiveness = start;
  int64_t elsewhereLeftNs = spinElsewhereNs();
  WaitSet waits;
  for (int64_t pass = 0;;) {
    Status health = ctx->health();
    if (!health.isOk()) return health;
    const int64_t now = nowNs();
    if (now - lastLiveness >= kLivenessPeriodNs) {
      lastLiveness = now;
      for (int peer : waitingFor()) BCCL_RETURN_IF_ERROR(ctx->checkPeerAlive(peer));
    }
    if (now - start >= timeoutNs) {
      std::string who;
      for (int peer : waitingFor()) who += (who.empty() ? " " : ", ") + ctx->peerName(peer);
      return timeoutError("no progress for " + std::to_string((now - start) / 1000000) +
                          " ms waiting for " + what + who);
    }
    if (elsewhereLeftNs > 0 && awaitedElsewhere()) {
      // In slices, so health, liveness and the timeout are still checked between them.
      elsewhereLeftNs -= spinFor(done, std::min<int64_t>(elsewhereLeftNs, kLivenessPeriodNs));
    } else if (pass++ < yieldPasses) {
      sched_yield();
    } else {
      waits.clear();
      if (bell != nullptr)
        waits.addDoorbell(bell);
      else
        ctx->addWakeHandles(&waits);
      waits.arm();
      // Re-check after arming: a ring that came before arm() must not be slept through.
      if (!done()) waits.wait(sleepSliceUs);
      waits.disarm();
    }
    if (done()) return Status::ok();
  }
}

template <class Done, class WaitingFor>
Status waitPolitely(ExecContext* ctx, Done done, WaitingFor waitingFor, int sleepSliceUs,
                    const char* what, Doorbell* bell = nullptr) {
  return waitPolitely(
      ctx, done, waitingFor, [] { return false; }, sleepSliceUs, what, bell);
}

}  // namespace bccl
