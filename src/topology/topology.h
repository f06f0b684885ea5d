// What a host looks like (packages, NUMA nodes, cores, NICs and their NUMA locality), found with
// hwloc when the library was built with it and from /sys otherwise, or loaded from a file so
// tests can feign any machine. BCCL_TOPO_DUMP_FILE writes what was found; BCCL_TOPO_FILE loads
// it back instead of probing. Ranks exchange the summary at init (PeerInfo), and subgroups by
// host and by NUMA node are computed from that.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/rendezvous.h"
#include "core/status.h"

namespace bccl {

struct NicInfo {
  std::string name;  // "eth0", "mlx5_0"
  std::string kind;  // "net" (an IP interface) or "rdma"
  int numaNode = -1;
};

struct HostTopology {
  std::string host;
  std::string source;  // "hwloc", "sysfs" or the file it was loaded from
  int packages = 1;
  int numaNodes = 1;
  int cores = 1;
  int pus = 1;
  uint64_t llcBytes = 0;  // the largest cache level's size (one instance), 0 if unknown
  int myNumaNode = 0;     // where the calling thread runs
  std::vector<NicInfo> nics;

  std::string toJson() const;
  static StatusOr<HostTopology> fromJson(const std::string& text);
};

// BCCL_TOPO_FILE if set, else a probe of this machine; writes BCCL_TOPO_DUMP_FILE if set ("%h"
// in the name becomes the host name, "%r" the given rank).
StatusOr<HostTopology> discoverTopology(int rank);

// Ranks grouped by host and, within hosts, by NUMA node (each group in rank order; groups in
// order of their lowest rank).
struct Subgroups {
  std::vector<std::vector<int>> hosts;
  std::vector<int> hostOf;  // rank -> index into hosts
  std::vector<std::vector<int>> numaDomains;
  std::vector<int> localIndex;  // rank -> position within its host
};
Subgroups computeSubgroups(const std::vector<PeerInfo>& peers);

}  // namespace bccl
