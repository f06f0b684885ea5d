#include "core/tuning.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <set>
#include <sstream>

#include "core/params.h"
#include "topology/placement.h"
#include "topology/topology.h"

namespace bccl {
namespace {

const StringParam kTuneFile("BCCL_TUNE_FILE", "",
                            "Link costs for algorithm selection ('key = value': intra_alpha_us, "
                            "intra_gbps, inter_alpha_us, inter_gbps, reduce_gbps, "
                            "schedule_overhead_us, ranks_per_cpu)");

// TCP between processes of one machine: no wire, but the kernel's copies and wake-ups.
constexpr double kLoopbackTcpAlpha = 15e-6, kLoopbackTcpBytesPerSecond = 2.5e9;

Status applyTuneFile(const std::string& path, SelectionContext* ctx) {
  std::ifstream in(path);
  if (!in) return invalidArgument("BCCL_TUNE_FILE " + path + " cannot be read");
  std::string line;
  int lineNo = 0;
  while (std::getline(in, line)) {
    ++lineNo;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string key, eq;
    double value = 0;
    if (!(fields >> key >> eq >> value) || eq != "=" || value <= 0)
      return invalidArgument(path + ":" + std::to_string(lineNo) +
                             ": expected 'key = positive number'");
    if (key == "intra_alpha_us")
      ctx->intraAlphaSeconds = value * 1e-6;
    else if (key == "intra_gbps")
      ctx->intraBytesPerSecond = value * 1e9;
    else if (key == "inter_alpha_us")
      ctx->interAlphaSeconds = value * 1e-6;
    else if (key == "inter_gbps")
      ctx->interBytesPerSecond = value * 1e9;
    else if (key == "reduce_gbps")
      ctx->reduceBytesPerSecond = value * 1e9;
    else if (key == "schedule_overhead_us")
      ctx->scheduleOverheadSeconds = value * 1e-6;
    else if (key == "ranks_per_cpu")
      ctx->ranksPerCpu = std::max(1.0, value);
    else
      return invalidArgument(path + ":" + std::to_string(lineNo) + ": unknown key '" + key + "'");
  }
  ctx->source = path;
  return Status::ok();
}

}  // namespace

bool tuneFileGiven() { return kTuneFile.isSet(); }

// Machines, not hosts: ranks feigning several hosts (BCCL_HOST_ID) still share the CPUs.
double ranksPerCpuOn(const std::vector<PeerInfo>& peers, uint64_t machineHash) {
  int ranks = 0, cpus = 0;  // the fewest CPUs any rank there reported
  for (const PeerInfo& p : peers) {
    if (p.machineHash != machineHash) continue;
    ++ranks;
    if (p.cpus > 0) cpus = cpus == 0 ? p.cpus : std::min(cpus, p.cpus);
  }
  return cpus > 0 ? static_cast<double>(ranks) / cpus : 1;
}

double ranksPerCpuOf(const std::vector<PeerInfo>& peers) {
  std::set<uint64_t> machines;
  for (const PeerInfo& p : peers) machines.insert(p.machineHash);
  double most = 1;
  for (uint64_t m : machines) most = std::max(most, ranksPerCpuOn(peers, m));
  return most;
}

StatusOr<SelectionContext> makeSelectionContext(const std::vector<PeerInfo>& peers,
                                                const CommConfig& config) {
  SelectionContext ctx;
  ctx.nranks = static_cast<int>(peers.size());
  ctx.hosts = computeSubgroups(peers).hosts;
  ctx.ringOrder = ringOrderOf(peers, ctx.hosts);
  // Computed from what every rank sent, so every rank gets the same figure.
  // Unknown anywhere (0) leaves it unknown, which the cost model takes as "always in cache".
  uint64_t share = UINT64_MAX;
  for (const std::vector<int>& host : ctx.hosts)
    for (int r : host)
      share = std::min(share, peers[static_cast<size_t>(r)].llcBytes / host.size());
  ctx.cacheBytesPerRank = share == UINT64_MAX ? 0 : static_cast<size_t>(share);
  ctx.ranksPerCpu = ranksPerCpuOf(peers);
  if (!config.allowShm) {
    // Ranks of one host talk TCP too: their link costs what loopback TCP costs.
    ctx.intraAlphaSeconds = kLoopbackTcpAlpha;
    ctx.intraBytesPerSecond = kLoopbackTcpBytesPerSecond;
    ctx.source = "defaults (tcp within hosts)";
  }
  BCCL_RETURN_IF_ERROR(readSelectionParams(&ctx));
  if (kTuneFile.isSet()) BCCL_RETURN_IF_ERROR(applyTuneFile(kTuneFile.get(), &ctx));
  return ctx;
}

}  // namespace bccl
