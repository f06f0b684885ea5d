#include "topology/placement.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

namespace bccl {

namespace {

// The lowest CPU of this process's affinity when it is narrower than the CPUs online, with how
// many CPUs it holds; {-1, 0} when the process may run anywhere.
std::pair<int, int> affinity() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0) return {-1, 0};
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online <= 0 || CPU_COUNT(&mask) >= online) return {-1, 0};
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &mask)) return {cpu, CPU_COUNT(&mask)};
  return {-1, 0};
}

}  // namespace

int boundCpu() { return affinity().first; }

int onlyCpu() {
  const std::pair<int, int> a = affinity();
  return a.second == 1 ? a.first : -1;
}

std::vector<char> ranksOnOtherCpus(const std::vector<PeerInfo>& peers, int me) {
  std::vector<char> elsewhere(peers.size(), 0);
  const PeerInfo& mine = peers[static_cast<size_t>(me)];
  for (size_t r = 0; r < peers.size(); ++r) {
    const PeerInfo& p = peers[r];
    elsewhere[r] = p.machineHash != mine.machineHash ||
                   (mine.onlyCpu >= 0 && p.onlyCpu >= 0 && p.onlyCpu != mine.onlyCpu);
  }
  return elsewhere;
}

std::vector<int> ringOrderOf(const std::vector<PeerInfo>& peers,
                             const std::vector<std::vector<int>>& hosts) {
  std::vector<int> order;
  order.reserve(peers.size());
  for (const std::vector<int>& host : hosts) {
    std::vector<int> local = host;
    const bool allBound = std::all_of(local.begin(), local.end(), [&](int r) {
      return peers[static_cast<size_t>(r)].boundCpu >= 0;
    });
    if (allBound)
      std::stable_sort(local.begin(), local.end(), [&](int a, int b) {
        return peers[static_cast<size_t>(a)].boundCpu < peers[static_cast<size_t>(b)].boundCpu;
      });
    order.insert(order.end(), local.begin(), local.end());
  }
  for (size_t p = 0; p < order.size(); ++p)
    if (order[p] != static_cast<int>(p)) return order;
  return {};
}

}  // namespace bccl
