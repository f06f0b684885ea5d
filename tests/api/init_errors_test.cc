// Misuse at communicator creation: bad ranks, bad configs, malformed unique-id strings, and
// rendezvous that can never complete. Init is where a library is most tempted to block, so
// each failure here must also come back within the configured timeout.
#include <bccl/bccl.h>
#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "support/expect.h"

namespace bccltest {
namespace {

// A call that checks its arguments only after contacting the rendezvous would otherwise wait
// the default 300 s; this bounds the calls made without a config. CTest sets it too.
const bool kShortDefaultTimeout = (setenv("BCCL_TIMEOUT_MS", "3000", 0), true);

// Scheduling noise on a loaded 2-core machine (and sanitizers) on top of a timeout.
constexpr double kSlackMs = 3000;

bcclConfig_t Config(int timeoutMs, const char* transports = "shm") {
  bcclConfig_t cfg = BCCL_CONFIG_INITIALIZER;
  cfg.timeoutMs = timeoutMs;
  cfg.transports = transports;
  return cfg;
}

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bcclUniqueId FreshId() {
  bcclUniqueId id;
  std::memset(&id, 0, sizeof id);
  EXPECT_EQ(bcclGetUniqueId(&id), bcclSuccess) << bcclGetLastError(nullptr);
  return id;
}

std::string IdString(const bcclUniqueId& id) {
  char buf[BCCL_UNIQUE_ID_STRING_BYTES];
  std::memset(buf, 0, sizeof buf);
  EXPECT_EQ(bcclUniqueIdToString(&id, buf, sizeof buf), bcclSuccess) << bcclGetLastError(nullptr);
  buf[sizeof buf - 1] = '\0';
  return buf;
}

TEST(InitErrors, RankArguments) {
  ASSERT_TRUE(kShortDefaultTimeout);
  const bcclUniqueId id = FreshId();
  bcclComm_t comm = nullptr;
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRank(&comm, 0, id, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRank(&comm, -1, id, 0));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRank(&comm, 2, id, -1));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRank(&comm, 2, id, 2));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRank(&comm, 1, id, 1));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRank(nullptr, 1, id, 0));
  bcclConfig_t cfg = Config(2000);
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRankConfig(&comm, 0, id, 0, &cfg));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRankConfig(&comm, 3, id, 3, &cfg));
  EXPECT_EQ(comm, nullptr) << "a failed init must not hand out a communicator";
}

TEST(InitErrors, BadConfig) {
  const bcclUniqueId id = FreshId();
  bcclComm_t comm = nullptr;
  bcclConfig_t cfg = Config(2000);
  cfg.magic = 0xdeadbeefu;
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRankConfig(&comm, 1, id, 0, &cfg));
  for (size_t size : {size_t{0}, size_t{4}}) {
    cfg = Config(2000);
    cfg.size = size;
    SCOPED_TRACE("size " + std::to_string(size));
    EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRankConfig(&comm, 1, id, 0, &cfg));
  }
  for (const char* t : {"carrier-pigeon", "shm,carrier-pigeon", "tcp,shm,ib0"}) {
    SCOPED_TRACE(std::string("transports ") + t);
    cfg = Config(2000, t);
    EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclCommInitRankConfig(&comm, 1, id, 0, &cfg));
  }
  EXPECT_EQ(comm, nullptr);
}

TEST(UniqueId, StringRoundTrip) {
  const bcclUniqueId id = FreshId();
  const std::string s = IdString(id);
  ASSERT_FALSE(s.empty());
  EXPECT_LT(s.size(), size_t{BCCL_UNIQUE_ID_STRING_BYTES});
  for (char c : s) {
    // It is meant for environment variables and command lines.
    EXPECT_TRUE(std::isgraph(static_cast<unsigned char>(c))) << "unprintable char in " << s;
  }
  bcclUniqueId back;
  std::memset(&back, 0x5a, sizeof back);
  ASSERT_EQ(bcclUniqueIdFromString(s.c_str(), &back), bcclSuccess) << bcclGetLastError(nullptr);
  EXPECT_EQ(std::memcmp(&id, &back, sizeof id), 0) << "round trip changed the id: " << s;
  EXPECT_EQ(IdString(back), s);
}

TEST(UniqueId, StringArguments) {
  const bcclUniqueId id = FreshId();
  char buf[BCCL_UNIQUE_ID_STRING_BYTES];
  EXPECT_BCCL_FAIL(bcclInvalidArgument,
                   bcclUniqueIdToString(&id, buf, BCCL_UNIQUE_ID_STRING_BYTES - 1));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclUniqueIdToString(&id, nullptr, sizeof buf));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclUniqueIdToString(nullptr, buf, sizeof buf));
  bcclUniqueId out;
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclUniqueIdFromString(nullptr, &out));
  EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclUniqueIdFromString(IdString(id).c_str(), nullptr));
}

TEST(UniqueId, MalformedStrings) {
  const std::string good = IdString(FreshId());
  ASSERT_GT(good.size(), 4u);
  std::vector<std::string> bad = {
      "",         "garbage",  good.substr(0, good.size() / 2), good.substr(0, good.size() - 1),
      good + "x", good + "00"};
  // Replace hex digits near the end and in the middle with a non-hex character.
  size_t replaced = 0;
  for (size_t i = good.size(); i-- > 0 && replaced < 1;) {
    if (std::isxdigit(static_cast<unsigned char>(good[i]))) {
      std::string s = good;
      s[i] = 'z';
      bad.push_back(s);
      ++replaced;
    }
  }
  const size_t mid = good.size() / 2;
  if (std::isxdigit(static_cast<unsigned char>(good[mid]))) {
    std::string s = good;
    s[mid] = 'g';
    bad.push_back(s);
  }
  for (const std::string& s : bad) {
    SCOPED_TRACE("string '" + s + "' (valid: '" + good + "')");
    bcclUniqueId out;
    EXPECT_BCCL_FAIL(bcclInvalidArgument, bcclUniqueIdFromString(s.c_str(), &out));
  }
}

// The listener serves exactly one communicator's init; a second init with its id finds nobody.
TEST(Rendezvous, ServedIdFailsWithinTimeout) {
  const bcclUniqueId id = FreshId();
  bcclConfig_t cfg = Config(2000);
  bcclComm_t comm = nullptr;
  ASSERT_EQ(bcclCommInitRankConfig(&comm, 1, id, 0, &cfg), bcclSuccess)
      << bcclGetLastError(nullptr);
  ASSERT_EQ(bcclCommDestroy(comm), bcclSuccess);
  for (int rank : {0, 1}) {
    SCOPED_TRACE("rank " + std::to_string(rank) + " of 2");
    comm = nullptr;
    const auto t0 = std::chrono::steady_clock::now();
    const bcclResult_t res = bcclCommInitRankConfig(&comm, 2, id, rank, &cfg);
    const double ms = MsSince(t0);
    EXPECT_NE(res, bcclSuccess);
    EXPECT_STRNE(bcclGetLastError(nullptr), "");
    EXPECT_LE(ms, cfg.timeoutMs + kSlackMs) << "init with a spent id took " << ms << " ms";
    if (res == bcclSuccess) bcclCommAbort(comm);
  }
}

// The listener is alive but the second rank never arrives: a timeout, not a hang.
TEST(Rendezvous, MissingPeerTimesOut) {
  const bcclUniqueId id = FreshId();
  bcclConfig_t cfg = Config(2000);
  bcclComm_t comm = nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  const bcclResult_t res = bcclCommInitRankConfig(&comm, 2, id, 0, &cfg);
  const double ms = MsSince(t0);
  EXPECT_NE(res, bcclSuccess) << "init of 2 ranks completed with 1 rank";
  EXPECT_STRNE(bcclGetLastError(nullptr), "");
  EXPECT_LE(ms, cfg.timeoutMs + kSlackMs) << "init took " << ms << " ms";
  if (res == bcclSuccess) bcclCommAbort(comm);
}

// With no launcher variables at all, init from the environment must say so, not wait.
TEST(Rendezvous, InitFromEmptyEnvironmentFails) {
  for (const char* v : {"BCCL_RANK", "BCCL_NRANKS", "BCCL_UNIQUE_ID", "RANK", "WORLD_SIZE",
                        "MASTER_ADDR", "MASTER_PORT", "OMPI_COMM_WORLD_RANK",
                        "OMPI_COMM_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "BCCL_COMM_ID"}) {
    unsetenv(v);
  }
  bcclConfig_t cfg = Config(2000);
  bcclComm_t comm = nullptr;
  const auto t0 = std::chrono::steady_clock::now();
  const bcclResult_t res = bcclCommInitFromEnv(&comm, &cfg);
  EXPECT_NE(res, bcclSuccess);
  EXPECT_STRNE(bcclGetLastError(nullptr), "");
  EXPECT_LE(MsSince(t0), cfg.timeoutMs + kSlackMs);
  if (res == bcclSuccess) bcclCommAbort(comm);
}

}  // namespace
}  // namespace bccltest
