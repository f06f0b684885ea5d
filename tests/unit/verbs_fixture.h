// What the verbs transport tests share: several VerbsContexts in one process (as ranks on
// threads have), connected pairwise over the RDMA device and driven from one thread, and the
// fixture that skips, saying why, when no RDMA device is usable (this host, a CI runner without
// soft-RoCE). With BCCL_TEST_REQUIRE_VERBS=1 (set by tests/verbs/run_in_softroce_vm.sh) a
// missing device is a failure, so the VM run cannot pass vacuously.
#ifndef BCCL_TESTS_UNIT_VERBS_FIXTURE_H_
#define BCCL_TESTS_UNIT_VERBS_FIXTURE_H_

#include <gtest/gtest.h>
#include <infiniband/verbs.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "support/connection_drive.h"
#include "support/scoped_env.h"
#include "transport/verbs/verbs_connection.h"
#include "transport/verbs/verbs_context.h"

namespace bccl {

using Clock = std::chrono::steady_clock;
using bccltest::ScopedEnv;
// A failed call shows its message.
#define ASSERT_OK(expr)                       \
  do {                                        \
    const ::bccl::Status st_ = (expr);        \
    ASSERT_TRUE(st_.isOk()) << st_.message(); \
  } while (0)

struct Rank {
  std::unique_ptr<VerbsContext> ctx;
  std::vector<std::unique_ptr<VerbsConnection> > conns;  // by peer; null for itself
};

inline std::string nameOf(int rank) { return "rank " + std::to_string(rank); }

inline void fill(std::vector<char>* buf, int seed) {
  for (size_t i = 0; i < buf->size(); ++i) (*buf)[i] = static_cast<char>(seed * 131 + i * 31);
}

inline Status makeRanks(int n, std::vector<Rank>* ranks) {
  ranks->resize(n);
  for (Rank& r : *ranks) {
    auto c = VerbsContext::create();
    if (!c.isOk()) return c.status();
    r.ctx = std::move(c.value());
    r.conns.resize(n);
  }
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b) {
      if (a == b) continue;
      auto c = VerbsConnection::create((*ranks)[a].ctx.get(), b, nameOf(b));
      if (!c.isOk()) return c.status();
      (*ranks)[a].conns[b] = std::move(c.value());
    }
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b)
      if (a != b)
        BCCL_RETURN_IF_ERROR((*ranks)[a].conns[b]->connect((*ranks)[b].conns[a]->localBlob()));
  return Status::ok();
}

inline void destroyAll(std::vector<Rank>* ranks) {
  for (Rank& r : *ranks) r.conns.clear();
  ranks->clear();
}

using bccltest::runUntil;

// After every operation completed: sends reported done when staged may still have writes in
// flight, and cancels or credits may be on their way. Progresses until no connection has
// anything left (true), or gives up after 5 s; any token reported meanwhile is an error.
inline ::testing::AssertionResult settles(const std::vector<Rank>& ranks) {
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  std::vector<uint64_t> late;
  for (;;) {
    bool busy = false;
    for (const Rank& r : ranks)
      for (const auto& c : r.conns) {
        if (c == nullptr) continue;
        Status st = c->progress(&late);
        if (!st.isOk()) return ::testing::AssertionFailure() << st.message();
        busy = busy || c->hasPending();
      }
    if (!late.empty()) return ::testing::AssertionFailure() << late.size() << " late completions";
    if (!busy) return ::testing::AssertionSuccess();
    if (Clock::now() > deadline) return ::testing::AssertionFailure() << "still busy after 5 s";
  }
}

class VerbsTransport : public ::testing::Test {
 protected:
  void TearDown() override { destroyAll(&ranks_); }

  // Skips (saying why) only when there is no usable RDMA device and the run does not demand
  // one; any other failure to set up is a test failure.
  void create(int n) {
    Status st = makeRanks(n, &ranks_);
    if (st.isOk()) return;
    destroyAll(&ranks_);
    const char* require = getenv("BCCL_TEST_REQUIRE_VERBS");
    const bool noDevice = st.message().find("RDMA device") != std::string::npos;
    if (noDevice && (require == nullptr || strcmp(require, "1") != 0))
      GTEST_SKIP() << "no usable RDMA device here (" << st.message()
                   << "); tests/verbs/run_in_softroce_vm.sh runs these on soft-RoCE";
    FAIL() << st.message();
  }
  VerbsConnection* conn(int from, int to) { return ranks_[from].conns[to].get(); }

  std::vector<Rank> ranks_;
};

#define CREATE_RANKS(n)                           \
  do {                                            \
    create(n);                                    \
    if (IsSkipped() || HasFatalFailure()) return; \
  } while (0)

// Sizes around every boundary: empty, one byte, odd, exactly one slot, one slot and a byte,
// many slots (more than the ring holds, so credits must come back).
inline std::vector<size_t> sizesFor(size_t slot) {
  return {0, 1, 7, 4093, slot, slot + 1, 3 * slot - 5, 40 * slot + 3};
}

inline void exchangeBothWays(std::vector<Rank>& ranks, VerbsConnection* ab, VerbsConnection* ba,
                             const std::vector<size_t>& sizes) {
  std::vector<std::vector<char> > out[2], in[2];
  for (int side = 0; side < 2; ++side)
    for (size_t i = 0; i < sizes.size(); ++i) {
      out[side].emplace_back(sizes[i]);
      fill(&out[side].back(), side * 10 + static_cast<int>(i));
      in[side].emplace_back(sizes[i], '\x5a');
    }
  VerbsConnection* c[2] = {ab, ba};
  // Side 0 receives before anything is sent; side 1 after its peer's sends are posted.
  for (size_t i = 0; i < sizes.size(); ++i) {
    RecvTarget r;
    r.dst = in[0][i].data();
    ASSERT_OK(c[0]->postRecv(r, sizes[i], 100 + i));
  }
  for (int side = 0; side < 2; ++side)
    for (size_t i = 0; i < sizes.size(); ++i)
      ASSERT_OK(c[side]->postSend(out[side][i].data(), sizes[i], i));
  for (size_t i = 0; i < sizes.size(); ++i) {
    RecvTarget r;
    r.dst = in[1][i].data();
    ASSERT_OK(c[1]->postRecv(r, sizes[i], 100 + i));
  }
  std::vector<uint64_t> done;
  Status st = runUntil(ranks, 4 * sizes.size(), 120000, &done);
  ASSERT_TRUE(st.isOk()) << st.message();
  for (int side = 0; side < 2; ++side)
    for (size_t i = 0; i < sizes.size(); ++i)
      EXPECT_TRUE(in[side][i] == out[1 - side][i]) << "side " << side << " size " << sizes[i];
  EXPECT_TRUE(settles(ranks));
}

}  // namespace bccl

#endif  // BCCL_TESTS_UNIT_VERBS_FIXTURE_H_
