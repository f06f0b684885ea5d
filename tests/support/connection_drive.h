// Driving transport connections from a test's own thread, the way the executor does: progress
// until enough operations completed, sleep on a connection's wake handles, and the checks that
// every transport's severed connection must pass. Shared by the verbs and UCX conformance tests.
#ifndef BCCL_TESTS_SUPPORT_CONNECTION_DRIVE_H_
#define BCCL_TESTS_SUPPORT_CONNECTION_DRIVE_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "core/status.h"
#include "transport/transport.h"
#include "transport/wait_set.h"

namespace bccltest {

// Progresses every connection of `ranks` (each with a `conns` vector, null for itself) until
// `expected` operations completed, one fails, or `timeoutMs` passes.
template <class Ranks>
bccl::Status runUntil(const Ranks& ranks, size_t expected, int timeoutMs,
                      std::vector<uint64_t>* done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (done->size() < expected) {
    for (const auto& r : ranks)
      for (const auto& c : r.conns)
        if (c != nullptr && c->hasPending()) BCCL_RETURN_IF_ERROR(c->progress(done));
    if (std::chrono::steady_clock::now() > deadline)
      return bccl::timeoutError("only " + std::to_string(done->size()) + " of " +
                                std::to_string(expected) + " operations completed");
  }
  return bccl::Status::ok();
}

// Waits for `token` on `c` the way the executor does when idle: arm, re-check, sleep. Counts
// the sleeps, so a test can tell a waiter that slept from one that spun.
inline bccl::Status waitPolitely(bccl::Connection* c, uint64_t token, int timeoutMs, int* sleeps) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  std::vector<uint64_t> done;
  bccl::WaitSet waits;
  auto finished = [&]() { return std::find(done.begin(), done.end(), token) != done.end(); };
  for (;;) {
    BCCL_RETURN_IF_ERROR(c->progress(&done));
    if (finished()) return bccl::Status::ok();
    if (std::chrono::steady_clock::now() > deadline)
      return bccl::timeoutError("waitPolitely: no completion");
    waits.clear();
    c->addToWaitSet(&waits);
    waits.arm();
    bccl::Status st = c->progress(&done);
    if (st.isOk() && !finished()) {
      ++*sleeps;
      waits.wait(3000000);  // far longer than any test waits: only a wake-up ends it early
    }
    waits.disarm();
    BCCL_RETURN_IF_ERROR(st);
  }
}

// A connection to rank `peer` severed with a receive pending: the receive fails blaming the
// peer by name, and nothing more can be posted.
inline void expectSeverFailsPending(bccl::Connection* c, int peer) {
  std::vector<char> in(4096);
  bccl::RecvTarget t;
  t.dst = in.data();
  ASSERT_TRUE(c->postRecv(t, in.size(), 1).isOk());
  c->sever();
  std::vector<uint64_t> done;
  bccl::Status st = c->progress(&done);
  EXPECT_EQ(st.code(), bcclRemoteError) << st.message();
  EXPECT_EQ(st.failedPeer(), peer);
  EXPECT_NE(st.message().find("rank " + std::to_string(peer)), std::string::npos) << st.message();
  c->dropPending();
  EXPECT_FALSE(c->postSend(in.data(), 1, 2).isOk());
}

}  // namespace bccltest

#endif  // BCCL_TESTS_SUPPORT_CONNECTION_DRIVE_H_
