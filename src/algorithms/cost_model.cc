// The formulas behind cost_model.h, one per algorithm, each mirroring what its builder emits:
// the same rounds, the same bytes per round, the same folds for non-powers of two. Keeping them
// next to each other makes it easy to see why one algorithm wins where.
#include "algorithms/cost_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "algorithms/hierarchical.h"
#include "algorithms/partition.h"

namespace bccl {
namespace {

constexpr double kNever = std::numeric_limits<double>::infinity();

// The machine as the model sees it: n ranks on `hosts` equal hosts, numbered host by host. A
// round lasts as long as its slowest pair; pairs that cross hosts share their host's network
// bandwidth with the other crossing pairs of the same host.
class Net {
 public:
  Net(const LinkCost& intra, const LinkCost& inter, int hosts, int n, double gamma,
      double cacheShare = 0)
      : intra_(intra), inter_(inter), gamma_(gamma), cacheShare_(cacheShare) {
    hosts_ = std::clamp(hosts, 1, n);
    perHost_ = (n + hosts_ - 1) / hosts_;
  }
  // Every rank sends to the rank d above or below (ring and chain: d = 1; Bruck): as many as d
  // ranks of a host may send across at once.
  LinkCost shift(long d) const { return crossing(std::min(d, perHost_)); }
  // Ranks exchange with the partner whose index differs in bit d (recursive doubling and
  // halving): all on one host while aligned groups of 2d nest in hosts, else up to d per host.
  LinkCost exchange(long d) const {
    return perHost_ % (2 * d) == 0 ? intra_ : crossing(std::min(d, perHost_));
  }
  // A tree level whose edges span d ranks: aligned like an exchange, but only about one edge
  // per host can cross.
  LinkCost treeLevel(long d) const { return perHost_ % (2 * d) == 0 ? intra_ : crossing(1); }
  double send(const LinkCost& link, double bytes) const {
    return link.alphaSeconds + bytes / link.bytesPerSecond;
  }
  double reduce(double bytes) const { return bytes / gamma_; }
  // Reading `bytes` again after touching `since` bytes: free while that fits in this rank's share
  // of the cache, else one more memory-bound pass. What the reductions and copies cost is
  // already charged; this is what an algorithm that forwards data a whole block after producing
  // it pays on top, against one that forwards it chunk by chunk (ring windows, trees).
  double refetch(double bytes, double since) const {
    return cacheShare_ > 0 && since > cacheShare_ ? bytes / gamma_ : 0;
  }

 private:
  LinkCost crossing(long flows) const {
    if (hosts_ == 1) return intra_;
    return LinkCost{std::max(intra_.alphaSeconds, inter_.alphaSeconds),
                    std::min(intra_.bytesPerSecond, inter_.bytesPerSecond / flows)};
  }

  LinkCost intra_, inter_;
  double gamma_;
  double cacheShare_;  // bytes of cache per rank; 0: every re-read hits the cache
  int hosts_ = 1;
  long perHost_ = 1;
};

// Recursive doubling's view of n: p = 2^rounds participants and rem = n - p folded ranks.
struct Pow2 {
  int p = 1, rounds = 0, rem = 0;
};

Pow2 pow2Below(int n) {
  Pow2 f;
  while (f.p * 2 <= n) {
    f.p *= 2;
    ++f.rounds;
  }
  f.rem = n - f.p;
  return f;
}

// Pipelining: a buffer of s bytes as chunks of at most chunkBytes.
struct Chunks {
  double count, bytes;
};

Chunks chunksOf(double s, size_t chunkBytes) {
  const double count = std::max(1.0, std::ceil(s / static_cast<double>(chunkBytes)));
  return Chunks{count, s / count};
}

double allReduce(const std::string& a, double s, int n, const Net& net, size_t chunkBytes) {
  if (a == "ring")  // forwards a chunk while its window is in cache (ringWindowChunks)
    return 2.0 * (n - 1) * net.send(net.shift(1), s / n) + (n - 1) * net.reduce(s / n) +
           net.refetch((2 * n - 3) * s / n, 3.0 * ringWindowChunks(n) * chunkBytes);
  const Pow2 f = pow2Below(n);
  // The even rank of a pair sends everything in and gets the result back.
  const double fold = f.rem > 0 ? 2 * net.send(net.exchange(1), s) + net.reduce(s) : 0;
  double t = fold;
  if (a == "rd") {
    // Every round after the first sends the whole buffer the previous one reduced.
    for (int k = 0; k < f.rounds; ++k)
      t += net.send(net.exchange(1L << k), s) + net.reduce(s) + (k > 0 ? net.refetch(s, 3 * s) : 0);
    return t;
  }
  if (a == "rhd") {
    // Nearest partner first with the biggest half; the allgather mirrors it. Each round sends
    // part of what the round before reduced (or, gathering, received), a whole block later.
    for (int k = 0; k < f.rounds; ++k) {
      const double b = s / static_cast<double>(2L << k);
      t += 2 * net.send(net.exchange(1L << k), b) + net.reduce(b);
      if (k > 0) t += net.refetch(b, 3 * 2 * b) + net.refetch(2 * b, 2 * b);
    }
    return t;
  }
  if (a == "tree") {
    // Each tree carries half. A chunk climbs `depth` levels and comes back down; in steady state
    // the busiest rank (interior in one tree, leaf in the other) sends and receives 2s and
    // reduces s, at the pace of the slowest link any level uses.
    const Chunks c = chunksOf(s / 2, chunkBytes);
    const Pow2 d = pow2Below(n);
    t = 0;
    double slowest = kNever;
    for (int level = 1; level <= d.rounds; ++level) {
      const LinkCost link = net.treeLevel(d.p >> level);
      t += 2 * net.send(link, c.bytes);
      slowest = std::min(slowest, link.bytesPerSecond);
    }
    return t + 2 * s / slowest + net.reduce(s);
  }
  return kNever;
}

double allGather(const std::string& a, double s, int n, const Net& net, size_t chunkBytes) {
  // Out of place, ring and recursive doubling alike copy my block into the output (the ring
  // chunk by chunk behind its sends, rd before its first round): both are charged for it, in
  // place neither pays it, so the comparison is the same either way. Charging rd alone made
  // the ring look cheaper at every large size, though it has n - 1 rounds to rd's log2 n.
  // The ring forwards what it received a window later (ringWindowChunks), rd a whole round.
  if (a == "ring")
    return (n - 1) * net.send(net.shift(1), s) + net.reduce(s) +
           (n - 2) * net.refetch(s, 2.0 * ringWindowChunks(n) * chunkBytes);
  if (a == "rd") {
    const Pow2 f = pow2Below(n);
    double t =
        f.rem > 0 ? net.send(net.exchange(1), s) + net.send(net.exchange(1), (n - 1) * s) : 0;
    // A participant holds n/p blocks on average, doubling every round.
    for (int k = 0; k < f.rounds; ++k) {
      const double held = s * n / f.p * static_cast<double>(1L << k);
      t += net.send(net.exchange(1L << k), held) + (k > 0 ? net.refetch(held / 2, held) : 0);
    }
    return t + net.reduce(s);
  }
  if (a == "bruck") {
    double t = net.reduce(n * s);  // my block into scratch, then the rotation out of it
    for (int d = 1; d < n; d *= 2) t += net.send(net.shift(d), std::min(d, n - d) * s);
    return t;
  }
  return kNever;
}

double reduceScatter(const std::string& a, double s, int n, const Net& net, size_t chunkBytes) {
  if (a == "ring")
    return (n - 1) * (net.send(net.shift(1), s) + net.reduce(s)) +
           (n - 2) * net.refetch(s, 3.0 * ringWindowChunks(n) * chunkBytes);
  if (a == "rhd") {
    const Pow2 f = pow2Below(n);
    const double total = n * s;
    double t = f.rem > 0 ? net.send(net.exchange(1), total) + net.reduce(total) +
                               net.send(net.exchange(1), s)
                         : 0;
    // Farthest partner first (so each participant keeps a contiguous run of blocks).
    // Each round sends half of what the round before reduced, a whole block later.
    for (int k = 0; k < f.rounds; ++k) {
      const double b = total / static_cast<double>(2L << k);
      t += net.send(net.exchange(f.p >> (k + 1)), b) + net.reduce(b) +
           (k > 0 ? net.refetch(b, 3 * 2 * b) : 0);
    }
    return t + net.reduce(s) + net.refetch(s, 3 * s);  // the result out of scratch
  }
  return kNever;
}

// Broadcast and reduce: pipelines of chunks along a chain (n - 1 hops) or down a binary tree
// (log2 n hops, but a parent feeds two children, so twice the bytes per hop).
double rooted(const std::string& a, double s, int n, const Net& net, size_t chunkBytes,
              bool reduces) {
  const Chunks c = chunksOf(s, chunkBytes);
  auto hop = [&](const LinkCost& link, double bytes) {
    return net.send(link, bytes) + (reduces ? net.reduce(bytes) : 0);
  };
  if (a == "chain") return (n - 2 + c.count) * hop(net.shift(1), c.bytes);
  if (a == "tree") {
    // The first chunk crosses every level; the others follow at the pace of the slowest hop.
    const Pow2 d = pow2Below(n);
    double t = 0, slowest = 0;
    for (int level = 1; level <= d.rounds; ++level) {
      const double h = hop(net.treeLevel(d.p >> level), 2 * c.bytes);
      t += h;
      slowest = std::max(slowest, h);
    }
    return t + (c.count - 1) * slowest;
  }
  return kNever;
}

// The subgroup a hierarchical phase runs in: n ranks all joined by `link`.
Net subgroup(const LinkCost& link, int n, double gamma) { return Net(link, link, 1, n, gamma); }

// What the builder runs among the H ranks of a rail or the leaders (hierarchical.cc).
double crossHost(double s, int h, const Net& net, size_t chunkBytes) {
  return allReduce(s <= kHierRdMaxBytes ? "rd" : "ring", s, h, net, chunkBytes);
}

double hierAllReduce(double s, const std::vector<int>& sizes, const LinkCost& intra,
                     const LinkCost& inter, double gamma, size_t chunkBytes) {
  const int h = static_cast<int>(sizes.size());
  const int largest = *std::max_element(sizes.begin(), sizes.end());
  const Net host = subgroup(intra, largest, gamma);
  // The slower of the two links, its bandwidth shared by `flows` ranks crossing at once.
  auto across = [&](int flows) {
    return LinkCost{std::max(intra.alphaSeconds, inter.alphaSeconds),
                    std::min(intra.bytesPerSecond, inter.bytesPerSecond / flows)};
  };
  if (std::all_of(sizes.begin(), sizes.end(), [&](int l) { return l == largest; })) {
    const int l = largest;
    const double seg = s / l;
    const double rs = (l - 1) * (host.send(intra, seg) + host.reduce(seg));
    const double ag = (l - 1) * host.send(intra, seg);
    const double rail = h > 1 ? crossHost(seg, h, subgroup(across(l), h, gamma), chunkBytes) : 0;
    return rs + rail + ag;
  }
  const double reduce = rooted("chain", s, largest, host, chunkBytes, true);
  const double bcast = rooted("chain", s, largest, host, chunkBytes, false);
  return reduce + crossHost(s, h, subgroup(across(1), h, gamma), chunkBytes) + bcast;
}

}  // namespace

double predictHierarchicalAllReduce(size_t bytes, const std::vector<int>& hostSizes,
                                    const LinkCost& intra, const LinkCost& inter,
                                    double reduceBytesPerSecond, size_t chunkBytes) {
  int n = 0;
  for (int l : hostSizes) n += std::max(l, 0);
  if (n <= 1 || bytes == 0) return 0;
  std::vector<int> sizes;
  for (int l : hostSizes)
    if (l > 0) sizes.push_back(l);
  return hierAllReduce(static_cast<double>(bytes), sizes, intra, inter, reduceBytesPerSecond,
                       std::max<size_t>(chunkBytes, 1));
}

const std::vector<std::string>& algorithmsFor(CollKind kind) {
  static const std::vector<std::string> allReduce{"ring", "tree", "rd", "rhd", "hier"};
  static const std::vector<std::string> allGather{"ring", "rd", "bruck"};
  static const std::vector<std::string> reduceScatter{"ring", "rhd"};
  static const std::vector<std::string> rootedOnes{"chain", "tree"};
  static const std::vector<std::string> none;
  switch (kind) {
    case CollKind::kAllReduce:
      return allReduce;
    case CollKind::kAllGather:
      return allGather;
    case CollKind::kReduceScatter:
      return reduceScatter;
    case CollKind::kBroadcast:
    case CollKind::kReduce:
      return rootedOnes;
    default:
      return none;
  }
}

double predictSeconds(CollKind kind, const std::string& algorithm, size_t bytes, int nranks,
                      const LinkCost& intra, const LinkCost& inter, int hosts,
                      double reduceBytesPerSecond, size_t chunkBytes, size_t cacheBytesPerRank) {
  const std::vector<std::string>& known = algorithmsFor(kind);
  if (std::find(known.begin(), known.end(), algorithm) == known.end()) return kNever;
  if (nranks <= 1 || bytes == 0) return 0;
  const Net net(intra, inter, hosts, nranks, reduceBytesPerSecond,
                static_cast<double>(cacheBytesPerRank));
  const double s = static_cast<double>(bytes);
  chunkBytes = std::max<size_t>(chunkBytes, 1);
  if (algorithm == "hier") {
    // One host: reduce-scatter plus allgather is the ring, and predicting the ring's very number
    // lets the tie go to the ring (listed first).
    const int h = std::clamp(hosts, 1, nranks);
    if (h == 1) return allReduce("ring", s, nranks, net, chunkBytes);
    std::vector<int> sizes;
    for (int i = 0; i < h; ++i) sizes.push_back(nranks / h + (i < nranks % h ? 1 : 0));
    return hierAllReduce(s, sizes, intra, inter, reduceBytesPerSecond, chunkBytes);
  }
  switch (kind) {
    case CollKind::kAllReduce:
      return allReduce(algorithm, s, nranks, net, chunkBytes);
    case CollKind::kAllGather:
      return allGather(algorithm, s, nranks, net, chunkBytes);
    case CollKind::kReduceScatter:
      return reduceScatter(algorithm, s, nranks, net, chunkBytes);
    case CollKind::kBroadcast:
      return rooted(algorithm, s, nranks, net, chunkBytes, false);
    case CollKind::kReduce:
      return rooted(algorithm, s, nranks, net, chunkBytes, true);
    default:
      return kNever;
  }
}

std::vector<Candidate> rankAlgorithms(CollKind kind, size_t bytes, int nranks,
                                      const LinkCost& intra, const LinkCost& inter, int hosts,
                                      double reduceBytesPerSecond, size_t chunkBytes,
                                      size_t cacheBytesPerRank) {
  std::vector<Candidate> out;
  for (const std::string& a : algorithmsFor(kind))
    out.push_back({a, predictSeconds(kind, a, bytes, nranks, intra, inter, hosts,
                                     reduceBytesPerSecond, chunkBytes, cacheBytesPerRank)});
  std::stable_sort(out.begin(), out.end(),
                   [](const Candidate& x, const Candidate& y) { return x.seconds < y.seconds; });
  return out;
}

}  // namespace bccl
