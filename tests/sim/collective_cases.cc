#include "sim/collective_cases.h"

namespace bccl::sim {

Layout layoutFor(Coll coll, int nranks, size_t count, bool inPlace, int rank) {
  Layout l;
  const size_t n = static_cast<size_t>(nranks), k = count, r = static_cast<size_t>(rank);
  switch (coll) {
    case Coll::kAllGather:
      l.recvCount = n * k;
      l.sendCount = k;
      l.memoryCount = inPlace ? n * k : (n + 1) * k;
      l.sendOffset = inPlace ? r * k : n * k;
      break;
    case Coll::kReduceScatter:
      l.sendCount = n * k;
      l.recvCount = k;
      l.memoryCount = inPlace ? n * k : (n + 1) * k;
      l.recvOffset = inPlace ? r * k : n * k;
      break;
    case Coll::kAllToAll:
      l.sendCount = l.recvCount = n * k;
      l.memoryCount = inPlace ? n * k : 2 * n * k;
      l.recvOffset = inPlace ? 0 : n * k;
      break;
    default:
      l.sendCount = l.recvCount = k;
      l.memoryCount = inPlace ? k : 2 * k;
      l.recvOffset = inPlace ? 0 : k;
      break;
  }
  return l;
}

Sym allOf(int nranks, long tag, int scaled) {
  Sym s;
  s.valid = true;
  s.tag = tag;
  s.counts.assign(nranks, 1);
  s.scaled = scaled;
  return s;
}

Sym expectedElement(Coll coll, int nranks, size_t count, bcclRedOp_t op, int root, int rank,
                    size_t i) {
  const int n = nranks;
  const long k = static_cast<long>(count), at = static_cast<long>(i);
  // Averaging over one rank divides by one: builders rightly skip it.
  const int scaled = op == bcclAvg && n > 1 ? 1 : 0;
  switch (coll) {
    case Coll::kAllReduce:
      return allOf(n, at, scaled);
    case Coll::kAllGather:
      return input(static_cast<int>(at / k), n, at % k);
    case Coll::kReduceScatter:
      return allOf(n, rank * k + at, scaled);
    case Coll::kBroadcast:
      return input(root, n, at);
    case Coll::kReduce:
      return rank == root ? allOf(n, at, scaled) : Sym{};
    case Coll::kAllToAll:
      return input(static_cast<int>(at / k), n, rank * k + at % k);
    case Coll::kBarrier:
      return Sym{};
  }
  return Sym{};
}

std::vector<int> shuffledOrder(int nranks) {
  std::vector<int> order;
  for (int r = 0; r < nranks; r += 2) order.push_back(r);
  for (int r = nranks - 1 - (nranks % 2); r > 0; r -= 2) order.push_back(r);
  return order;
}

}  // namespace bccl::sim
