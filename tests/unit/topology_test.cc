// Topology files: what BCCL_TOPO_DUMP_FILE writes, BCCL_TOPO_FILE loads back unchanged, and the
// subgroups computed from the loaded topologies are the same as from the originals; a feigned
// two-host, two-NUMA-node layout groups as it says.
#include "topology/topology.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/tuning.h"
#include "topology/placement.h"

namespace bccl {
namespace {

std::string tempDir() {
  char pattern[] = "/tmp/bccl-topo-XXXXXX";
  const char* dir = mkdtemp(pattern);
  return dir ? dir : "/tmp";
}

// A machine of 2 NUMA nodes with a NIC on each; rank r is on host r / 4, NUMA node r % 2.
std::string feignedJson(int rank) {
  return "{\"host\": \"feigned-" + std::to_string(rank / 4) +
         "\", \"source\": \"test\", \"packages\": 2, \"numa_nodes\": 2, \"cores\": 16, "
         "\"pus\": 32, \"my_numa_node\": " +
         std::to_string(rank % 2) +
         ", \"nics\": [{\"name\": \"eth0\", \"kind\": \"net\", \"numa_node\": 0}, "
         "{\"name\": \"mlx5_1\", \"kind\": \"rdma\", \"numa_node\": 1}]}";
}

std::string withoutSource(HostTopology t) {
  t.source.clear();
  return t.toJson();
}

std::vector<PeerInfo> peersFrom(const std::vector<HostTopology>& topos) {
  std::vector<PeerInfo> peers(topos.size());
  for (size_t r = 0; r < topos.size(); ++r) {
    peers[r].rank = static_cast<int>(r);
    peers[r].hostHash = std::hash<std::string>()(topos[r].host);
    peers[r].numaNode = topos[r].myNumaNode;
  }
  return peers;
}

// Loads rank r's topology from `pattern` (with %r), dumping it to `dumpPattern` when non-empty.
std::vector<HostTopology> loadAll(int n, const std::string& pattern,
                                  const std::string& dumpPattern) {
  setenv("BCCL_TOPO_FILE", pattern.c_str(), 1);
  if (dumpPattern.empty())
    unsetenv("BCCL_TOPO_DUMP_FILE");
  else
    setenv("BCCL_TOPO_DUMP_FILE", dumpPattern.c_str(), 1);
  std::vector<HostTopology> out;
  for (int r = 0; r < n; ++r) {
    StatusOr<HostTopology> t = discoverTopology(r);
    EXPECT_TRUE(t.isOk()) << t.status().message();
    out.push_back(t.isOk() ? t.value() : HostTopology{});
  }
  unsetenv("BCCL_TOPO_FILE");
  unsetenv("BCCL_TOPO_DUMP_FILE");
  return out;
}

TEST(Topology, DumpThenLoadGivesTheSameSubgroups) {
  const int n = 8;
  const std::string dir = tempDir();
  for (int r = 0; r < n; ++r)
    std::ofstream(dir + "/in-" + std::to_string(r) + ".json") << feignedJson(r);
  const std::vector<HostTopology> first = loadAll(n, dir + "/in-%r.json", dir + "/out-%r.json");
  const std::vector<HostTopology> again = loadAll(n, dir + "/out-%r.json", "");
  for (int r = 0; r < n; ++r) EXPECT_EQ(withoutSource(first[r]), withoutSource(again[r])) << r;

  const Subgroups a = computeSubgroups(peersFrom(first));
  const Subgroups b = computeSubgroups(peersFrom(again));
  EXPECT_EQ(a.hosts, b.hosts);
  EXPECT_EQ(a.numaDomains, b.numaDomains);
  EXPECT_EQ(a.localIndex, b.localIndex);
  // And they are what the feigned layout says: two hosts of four, split by NUMA node.
  EXPECT_EQ(a.hosts, (std::vector<std::vector<int>>{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(a.numaDomains, (std::vector<std::vector<int>>{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  ASSERT_EQ(first[0].nics.size(), 2u);
  EXPECT_EQ(first[0].nics[1].kind, "rdma");
  EXPECT_EQ(first[0].nics[1].numaNode, 1);
}

TEST(Topology, ThisMachineRoundTrips) {
  const std::string dir = tempDir();
  setenv("BCCL_TOPO_DUMP_FILE", (dir + "/probe-%r.json").c_str(), 1);
  StatusOr<HostTopology> probed = discoverTopology(0);
  unsetenv("BCCL_TOPO_DUMP_FILE");
  ASSERT_TRUE(probed.isOk()) << probed.status().message();
  EXPECT_GE(probed.value().pus, probed.value().cores);
  EXPECT_GE(probed.value().cores, 1);
  const std::vector<HostTopology> loaded = loadAll(1, dir + "/probe-%r.json", "");
  EXPECT_EQ(withoutSource(probed.value()), withoutSource(loaded[0]));
}

TEST(Topology, MalformedFileIsAClearError) {
  const std::string dir = tempDir();
  std::ofstream(dir + "/bad-0.json") << "{\"numa_nodes\": 0}";
  setenv("BCCL_TOPO_FILE", (dir + "/bad-%r.json").c_str(), 1);
  StatusOr<HostTopology> t = discoverTopology(0);
  unsetenv("BCCL_TOPO_FILE");
  ASSERT_FALSE(t.isOk());
  EXPECT_NE(t.status().message().find("bad-0.json"), std::string::npos) << t.status().message();
}

// Ranks as (host, bound CPU): the ring goes host by host, and within a host by CPU when every
// rank there is bound, so ranks that share a core are neighbours; the order is empty (rank
// order) when nothing would change.
std::vector<int> ringFor(const std::vector<std::pair<uint64_t, int>>& ranks) {
  std::vector<PeerInfo> peers(ranks.size());
  for (size_t r = 0; r < ranks.size(); ++r) {
    peers[r].rank = static_cast<int>(r);
    peers[r].hostHash = ranks[r].first;
    peers[r].boundCpu = ranks[r].second;
  }
  return ringOrderOf(peers, computeSubgroups(peers).hosts);
}

TEST(Placement, RingNeighboursShareACoreAndAHost) {
  // Round-robin binding of 4 and 8 ranks on 2 cores.
  EXPECT_EQ(ringFor({{1, 0}, {1, 1}, {1, 0}, {1, 1}}), (std::vector<int>{0, 2, 1, 3}));
  EXPECT_EQ(ringFor({{1, 0}, {1, 1}, {1, 0}, {1, 1}, {1, 0}, {1, 1}, {1, 0}, {1, 1}}),
            (std::vector<int>{0, 2, 4, 6, 1, 3, 5, 7}));
  // Hosts interleaved in rank order: one crossing per host; CPUs ordered within each.
  EXPECT_EQ(ringFor({{7, 1}, {9, 0}, {7, 0}, {9, 1}}), (std::vector<int>{2, 0, 1, 3}));
  // One rank unbound on a host: that host keeps rank order.
  EXPECT_EQ(ringFor({{1, 1}, {1, -1}, {1, 0}}), std::vector<int>{});
  // Already in order, or unbound everywhere: rank order, said as an empty order.
  EXPECT_EQ(ringFor({{1, 0}, {1, 0}, {1, 1}, {1, 1}}), std::vector<int>{});
  EXPECT_EQ(ringFor({{1, -1}, {1, -1}}), std::vector<int>{});
}

// Ranks as (machine, CPUs it reports).
double crowding(const std::vector<std::pair<uint64_t, int>>& ranks) {
  std::vector<PeerInfo> peers(ranks.size());
  for (size_t r = 0; r < ranks.size(); ++r) {
    peers[r].machineHash = peers[r].hostHash = ranks[r].first;
    peers[r].cpus = ranks[r].second;
  }
  return ranksPerCpuOf(peers);
}

TEST(Placement, RanksPerCpuIsThatOfTheMostCrowdedMachine) {
  EXPECT_EQ(crowding({{1, 2}, {1, 2}}), 1);
  EXPECT_EQ(crowding({{1, 2}, {1, 2}, {1, 2}, {1, 2}, {1, 2}, {1, 2}, {1, 2}, {1, 2}}), 4);
  EXPECT_EQ(crowding({{1, 8}, {1, 8}}), 1);  // never below one
  EXPECT_EQ(crowding({{1, 2}, {2, 1}, {2, 1}, {2, 1}}), 3);
  EXPECT_EQ(crowding({{1, 0}, {1, 0}, {1, 0}}), 1);  // unknown: assume a CPU each
}

// What decides whether an idle rank spins: its own machine's count, not the most crowded one.
TEST(Placement, RanksPerCpuOfOneMachineCountsOnlyItsRanks) {
  std::vector<PeerInfo> peers(4);
  const uint64_t machineOf[] = {1, 2, 2, 2};
  const int cpusOf[] = {2, 1, 1, 0};  // a rank that did not say is not counted as none
  for (size_t r = 0; r < peers.size(); ++r) {
    peers[r].machineHash = peers[r].hostHash = machineOf[r];
    peers[r].cpus = cpusOf[r];
  }
  EXPECT_EQ(ranksPerCpuOn(peers, 1), 0.5);  // a spare CPU: below one, so it spins
  EXPECT_EQ(ranksPerCpuOn(peers, 2), 3);
  EXPECT_EQ(ranksPerCpuOn(peers, 3), 1);  // no rank there said: a CPU each
  EXPECT_EQ(ranksPerCpuOf(peers), 3);
}

TEST(Placement, FeignedHostsOnOneMachineShareItsCpus) {
  std::vector<PeerInfo> peers(4);
  for (size_t r = 0; r < peers.size(); ++r) {
    peers[r].machineHash = 5;
    peers[r].hostHash = 10 + r / 2;  // BCCL_HOST_ID: 2 hosts of 2
    peers[r].cpus = 2;
  }
  EXPECT_EQ(ranksPerCpuOf(peers), 2);
}

TEST(Placement, BoundCpuFollowsTheAffinityMask) {
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof(saved), &saved), 0);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (CPU_COUNT(&saved) < online) GTEST_SKIP() << "this process is already bound";
  EXPECT_EQ(boundCpu(), -1) << "free to run on every CPU";
  if (online < 2) GTEST_SKIP() << "one CPU: binding to it changes nothing";
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(1, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  const int cpu = boundCpu(), only = onlyCpu();
  ASSERT_EQ(sched_setaffinity(0, sizeof(saved), &saved), 0);
  EXPECT_EQ(cpu, 1);
  EXPECT_EQ(only, 1);
  EXPECT_EQ(onlyCpu(), -1) << "free again";
}

// Ranks as (machine, the one CPU it may run on, or -1): which ranks rank 0 may spin for.
std::vector<char> elsewhereOfRank0(const std::vector<std::pair<uint64_t, int>>& ranks) {
  std::vector<PeerInfo> peers(ranks.size());
  for (size_t r = 0; r < ranks.size(); ++r) {
    peers[r].machineHash = peers[r].hostHash = ranks[r].first;
    peers[r].onlyCpu = ranks[r].second;
  }
  return ranksOnOtherCpus(peers, 0);
}

TEST(Placement, RanksOnAnotherMachineOrBoundToAnotherCpuRunElsewhere) {
  // Round-robin binding of 4 ranks on 2 CPUs: ranks 1 and 3 run on the other CPU.
  EXPECT_EQ(elsewhereOfRank0({{1, 0}, {1, 1}, {1, 0}, {1, 1}}), (std::vector<char>{0, 1, 0, 1}));
  // Unbound (or bound to several CPUs): it may run anywhere, on either side.
  EXPECT_EQ(elsewhereOfRank0({{1, 0}, {1, -1}, {1, 1}}), (std::vector<char>{0, 0, 1}));
  EXPECT_EQ(elsewhereOfRank0({{1, -1}, {1, 1}}), (std::vector<char>{0, 0}));
  // Another machine is elsewhere whatever its CPU numbers say, bound or not.
  EXPECT_EQ(elsewhereOfRank0({{1, 0}, {2, 0}, {2, -1}}), (std::vector<char>{0, 1, 1}));
  EXPECT_EQ(elsewhereOfRank0({{1, -1}, {2, 0}}), (std::vector<char>{0, 1}));
}

}  // namespace
}  // namespace bccl
