// Binary-tree algorithms. A chain or ring needs n-1 hops before the last rank sees the first
// chunk; a tree needs about log2(n), which is what matters for small and medium messages at scale.
// Allreduce uses two complementary trees (NCCL's double binary tree idea): every rank is interior
// in at most one of them, so each tree carries half the data and no rank forwards more than about
// the ring's volume. Broadcast and reduce use one tree rooted at shape.root.
#include <algorithm>
#include <tuple>
#include <vector>

#include "algorithms/builders_extra.h"
#include "algorithms/partition.h"

namespace bccl {
namespace {

// An in-order binary tree over positions 1..n: position q with lowest set bit b has children
// q - b/2 and q + b/2, so odd positions are leaves and even ones interior; the root is the
// largest power of two <= n. Where q + b/2 is past n, the right child is the farthest q + b/4,
// q + b/8, ... that exists, and the parent rule below picks exactly that node's parent back.
struct Node {
  int parent = 0;            // position, 0 at the root
  int children[2] = {0, 0};  // positions, 0 for none
};

Node nodeAt(int q, int n) {
  Node node;
  const int b = q & -q;
  if (b > 1) {
    node.children[0] = q - b / 2;
    for (int c = b / 2; c >= 1; c /= 2)
      if (q + c <= n) {
        node.children[1] = q + c;
        break;
      }
  }
  int up = (q ^ b) | (b << 1);
  if (up > n) up = q ^ b;
  node.parent = up;
  return node;
}

// One tree placed on ranks: rank r sits at position pos[r].
class Tree {
 public:
  // Positions are ranks shifted by `shift` (mod n), or mirrored (position n - r).
  Tree(int n, int shift, bool mirror) : n_(n), pos_(n), rankAt_(n + 1) {
    for (int r = 0; r < n; ++r) {
      pos_[r] = mirror ? n - r : modRank(r + shift, n) + 1;
      rankAt_[pos_[r]] = r;
    }
  }
  int parent(int r) const {
    int p = nodeAt(pos_[r], n_).parent;
    return p == 0 ? -1 : rankAt_[p];
  }
  std::vector<int> children(int r) const {
    std::vector<int> out;
    for (int c : nodeAt(pos_[r], n_).children)
      if (c != 0) out.push_back(rankAt_[c]);
    return out;
  }
  int depth(int r) const {
    int d = 0;
    for (int q = pos_[r]; nodeAt(q, n_).parent != 0; q = nodeAt(q, n_).parent) ++d;
    return d;
  }
  int height() const {
    int h = 0;
    for (int r = 0; r < n_; ++r) h = std::max(h, depth(r));
    return h;
  }

 private:
  int n_;
  std::vector<int> pos_, rankAt_;
};

int largestPowerOfTwoAtMost(int n) {
  int p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

// The tree for a rooted collective: the root at the top position.
Tree rootedTree(int n, int root) { return Tree(n, largestPowerOfTwoAtMost(n) - 1 - root, false); }

// One step of the double-tree allreduce. The first four fields name the message (or local step)
// identically on both of its ranks and order it by an estimate of when it can happen in the
// pipeline (chunk j moves up one level per time unit, then down); sorting every rank's steps by
// that key gives each pair of ranks the same message order and a causal global order, so no rank
// waits on a message queued behind one that cannot be sent yet.
struct Event {
  enum Kind { kUpRecv, kUpSend, kScale, kDownRecv, kDownSend };
  long time;
  int tree;
  int phase;  // 0 up, 1 down
  int who;    // the child end of the tree edge
  Kind kind;
  int peer;
  size_t chunk;
  bool operator<(const Event& o) const {
    return std::tie(time, tree, phase, who, kind) <
           std::tie(o.time, o.tree, o.phase, o.who, o.kind);
  }
};

}  // namespace

Schedule buildTreeAllReduce(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "tree");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  if (n == 1) {
    addSingleRankCopy(&sch, s);
    return sch;
  }
  const size_t per = chunkElems(s.chunkBytes, es);
  // Tree 0 is interior at odd ranks; mirroring (n even) or shifting by one (n odd) makes tree 1
  // interior only at even ranks.
  const Tree trees[2] = {Tree(n, 0, false), n % 2 == 0 ? Tree(n, 0, true) : Tree(n, -1, false)};
  Span halves[2] = {segmentOf(s.count, 2, 0), segmentOf(s.count, 2, 1)};
  std::vector<Event> events;
  for (int t = 0; t < 2; ++t) {
    const Tree& tree = trees[t];
    const int parent = tree.parent(r), d = tree.depth(r);
    const long top = tree.height();
    const std::vector<int> kids = tree.children(r);
    for (size_t j = 0; j < numChunks(halves[t], per); ++j) {
      const long base = static_cast<long>(j) + top;
      for (int c : kids) events.push_back({base - d - 1, t, 0, c, Event::kUpRecv, c, j});
      if (parent >= 0) {
        events.push_back({base - d, t, 0, r, Event::kUpSend, parent, j});
        events.push_back({base + d, t, 1, r, Event::kDownRecv, parent, j});
      } else if (s.op == bcclAvg) {
        events.push_back({base, t, 0, r, Event::kScale, -1, j});
      }
      for (int c : kids) events.push_back({base + d + 1, t, 1, c, Event::kDownSend, c, j});
    }
  }
  std::sort(events.begin(), events.end());

  // Per tree and chunk: the step that last wrote the receive buffer, and the send up. The send
  // reads what the result coming down overwrites; that result cannot exist before the send was
  // consumed, but the receive says so itself rather than relying on the transport's timing.
  std::vector<uint32_t> acc[2], upSend[2];
  for (int t = 0; t < 2; ++t) {
    acc[t].assign(numChunks(halves[t], per), kNoStep);
    upSend[t].assign(numChunks(halves[t], per), kNoStep);
  }
  for (const Event& e : events) {
    const Span c = chunkOf(halves[e.tree], per, e.chunk);
    const size_t bytes = c.count * es;
    uint32_t& last = acc[e.tree][e.chunk];
    const uint16_t current = last == kNoStep ? kSendBuffer : kRecvBuffer;
    switch (e.kind) {
      case Event::kUpRecv:
        last = sch.add(
            recvReduceStep(e.peer, sch.at(kRecvBuffer, c.offset), sch.at(current, c.offset), bytes),
            depsOf(last));
        break;
      case Event::kUpSend:
        upSend[e.tree][e.chunk] =
            sch.add(sendStep(e.peer, sch.at(current, c.offset), bytes), depsOf(last));
        break;
      case Event::kScale:
        last =
            sch.add(scaleStep(sch.at(kRecvBuffer, c.offset), sch.at(kRecvBuffer, c.offset), bytes),
                    depsOf(last));
        break;
      case Event::kDownRecv:
        last = sch.add(recvStep(e.peer, sch.at(kRecvBuffer, c.offset), bytes),
                       depsOf(upSend[e.tree][e.chunk]));
        break;
      case Event::kDownSend:
        sch.add(sendStep(e.peer, sch.at(kRecvBuffer, c.offset), bytes), depsOf(last));
        break;
    }
  }
  return sch;
}

Schedule buildTreeBroadcast(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "tree");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  const bool isRoot = r == s.root;
  // The root's children read the send buffer, so this copy delays nothing.
  if (isRoot && !s.inPlace && s.count > 0)
    sch.add(copyStep(sch.at(kRecvBuffer, 0), sch.at(kSendBuffer, 0), s.count * es));
  if (n == 1) return sch;
  const Tree tree = rootedTree(n, s.root);
  const int parent = tree.parent(r);
  const std::vector<int> kids = tree.children(r);
  const size_t per = chunkElems(s.chunkBytes, es);
  const Span whole{0, s.count};
  for (size_t j = 0; j < numChunks(whole, per); ++j) {
    const Span c = chunkOf(whole, per, j);
    uint32_t got = kNoStep;
    if (parent >= 0) got = sch.add(recvStep(parent, sch.at(kRecvBuffer, c.offset), c.count * es));
    for (int kid : kids)
      sch.add(sendStep(kid, sch.at(isRoot ? kSendBuffer : kRecvBuffer, c.offset), c.count * es),
              depsOf(got));
  }
  return sch;
}

Schedule buildTreeReduce(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "tree");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  if (n == 1) {
    addSingleRankCopy(&sch, s);
    return sch;
  }
  const Tree tree = rootedTree(n, s.root);
  const int parent = tree.parent(r);
  const std::vector<int> kids = tree.children(r);
  const bool isRoot = parent < 0;
  // Only the root's receive buffer is the user's to write; partial sums elsewhere go to scratch.
  const uint16_t into = isRoot ? kRecvBuffer : kScratchBuffer;
  if (!isRoot && !kids.empty()) sch.scratchBytes = s.count * es;
  const size_t per = chunkElems(s.chunkBytes, es);
  const Span whole{0, s.count};
  for (size_t j = 0; j < numChunks(whole, per); ++j) {
    const Span c = chunkOf(whole, per, j);
    const size_t bytes = c.count * es;
    uint32_t last = kNoStep;
    for (int kid : kids) {
      const uint16_t operand = last == kNoStep ? kSendBuffer : into;
      last = sch.add(recvReduceStep(kid, sch.at(into, c.offset), sch.at(operand, c.offset), bytes),
                     depsOf(last));
    }
    if (!isRoot)
      sch.add(sendStep(parent, sch.at(last == kNoStep ? kSendBuffer : into, c.offset), bytes),
              depsOf(last));
    else if (s.op == bcclAvg)
      sch.add(scaleStep(sch.at(kRecvBuffer, c.offset), sch.at(kRecvBuffer, c.offset), bytes),
              depsOf(last));
  }
  return sch;
}

}  // namespace bccl
