// Hierarchical allreduce and the composition machinery behind it. A flat ring over hosts joined
// by a slow network makes every one of its 2(n-1) steps wait on that network; composing flat
// algorithms over subgroups sends only what must cross, spread over all local ranks (rails).
#include "algorithms/hierarchical.h"

#include <algorithm>
#include <climits>

#include "algorithms/builders_extra.h"
#include "algorithms/partition.h"
#include "core/dtype.h"

namespace bccl {
namespace {

bool readsSrc(StepKind k) { return k != StepKind::kRecv; }
bool writesDst(StepKind k) { return k != StepKind::kSend; }

}  // namespace

// ---- ScheduleComposer -----------------------------------------------------------------------

ScheduleComposer::Ranges::Ranges() { cells_.emplace(0, Cell{SIZE_MAX, kNoStep, {}}); }

std::map<size_t, ScheduleComposer::Ranges::Cell>::iterator ScheduleComposer::Ranges::split(
    size_t at) {
  auto it = std::prev(cells_.upper_bound(at));
  if (it->first == at) return it;
  Cell tail = it->second;
  it->second.end = at;
  return cells_.emplace_hint(std::next(it), at, std::move(tail));
}

void ScheduleComposer::Ranges::dependencies(size_t begin, size_t end, bool write,
                                            std::vector<uint32_t>* out) const {
  for (auto it = std::prev(cells_.upper_bound(begin)); it != cells_.end() && it->first < end;
       ++it) {
    if (it->second.writer != kNoStep) out->push_back(it->second.writer);
    // Write after read: every read since the last write must be done first.
    if (write) out->insert(out->end(), it->second.readers.begin(), it->second.readers.end());
  }
}

void ScheduleComposer::Ranges::record(size_t begin, size_t end, bool write, uint32_t step) {
  auto it = split(begin);
  split(end);
  for (; it != cells_.end() && it->first < end; ++it) {
    Cell& c = it->second;
    if (write) {
      // A correct schedule orders its writes after the reads they overwrite, so the writer
      // alone stands for them from now on.
      c.writer = step;
      c.readers.clear();
    } else if (c.readers.empty() || c.readers.back() != step) {
      c.readers.push_back(step);
    }
  }
}

ScheduleComposer::ScheduleComposer(Schedule& parent, std::vector<BufRef> aliases)
    : parent_(parent), aliases_(std::move(aliases)) {
  for (uint16_t b = static_cast<uint16_t>(aliases_.size()); b < parent_.numBuffers; ++b)
    aliases_.push_back(BufRef{b, 0});
  for (uint32_t i = 0; i < parent_.steps.size(); ++i) record(i);
}

BufRef ScheduleComposer::physical(const BufRef& ref) const {
  const BufRef& a = aliases_[ref.buffer];
  return BufRef{a.buffer, a.offset + ref.offset};
}

std::vector<uint32_t> ScheduleComposer::crossDependencies(const Step& st) const {
  std::vector<uint32_t> out;
  if (st.bytes == 0) return out;
  auto touch = [&](const BufRef& ref, bool write) {
    const BufRef p = physical(ref);
    auto it = spaces_.find(p.buffer);
    if (it != spaces_.end()) it->second.dependencies(p.offset, p.offset + st.bytes, write, &out);
  };
  if (readsSrc(st.kind)) touch(st.src, false);
  if (writesDst(st.kind)) touch(st.dst, true);
  return out;
}

void ScheduleComposer::record(uint32_t index) {
  const Step& st = parent_.steps[index];
  if (st.bytes == 0) return;
  auto touch = [&](const BufRef& ref, bool write) {
    const BufRef p = physical(ref);
    spaces_[p.buffer].record(p.offset, p.offset + st.bytes, write, index);
  };
  // Reads first: a step that reduces in place ends as the writer of its bytes.
  if (readsSrc(st.kind)) touch(st.src, false);
  if (writesDst(st.kind)) touch(st.dst, true);
}

void ScheduleComposer::append(const Schedule& sub, const std::vector<int>& members,
                              const std::vector<BufRef>& buffers) {
  const uint32_t base = static_cast<uint32_t>(parent_.steps.size());
  // A fresh scratch region per sub-schedule: sharing one would only add false dependencies.
  const size_t scratchBase = (parent_.scratchBytes + 63) / 64 * 64;
  if (sub.scratchBytes > 0) parent_.scratchBytes = scratchBase + sub.scratchBytes;
  auto place = [&](const BufRef& r) {
    if (r.buffer == kScratchBuffer) return BufRef{kScratchBuffer, scratchBase + r.offset};
    return BufRef{buffers[r.buffer].buffer, buffers[r.buffer].offset + r.offset};
  };
  // Dependencies are computed against the parent as it was before this sub-schedule: within
  // it, its own dependencies already order its steps.
  for (const Step& in : sub.steps) {
    Step st = in;
    if (st.peer >= 0) st.peer = members[st.peer];
    if (readsSrc(st.kind)) st.src = place(st.src);
    if (writesDst(st.kind)) st.dst = place(st.dst);
    std::vector<uint32_t> deps = crossDependencies(st);
    for (uint32_t d = 0; d < in.depCount; ++d) deps.push_back(base + sub.deps[in.depBegin + d]);
    std::sort(deps.begin(), deps.end());
    deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
    parent_.add(st, deps);
  }
  for (uint32_t i = base; i < parent_.steps.size(); ++i) record(i);
}

uint32_t ScheduleComposer::addLocal(const Step& step) {
  std::vector<uint32_t> deps = crossDependencies(step);
  std::sort(deps.begin(), deps.end());
  deps.erase(std::unique(deps.begin(), deps.end()), deps.end());
  const uint32_t id = parent_.add(step, deps);
  record(id);
  return id;
}

// ---- flat rings over uneven segments --------------------------------------------------------

Schedule buildRingReduceScatterSegments(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "ring");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  if (n == 1) {
    addSingleRankCopy(&sch, s);
    return sch;
  }
  const int next = modRank(r + 1, n), prev = modRank(r - 1, n);
  const size_t per = chunkElems(s.chunkBytes, es);
  std::vector<std::vector<uint32_t>> last(n);  // per segment and chunk: its latest partial sum
  for (int i = 0; i < n; ++i) last[i].assign(numChunks(segmentOf(s.count, n, i), per), kNoStep);
  // Step k sends segment r-k-1 and receives r-k-2, so the last receive is segment r. Each
  // segment is received once, into memory nothing has read: in place needs no guards.
  for (int step = 0; step < n - 1; ++step) {
    const int sendSeg = modRank(r - step - 1, n), recvSeg = modRank(r - step - 2, n);
    const Span ss = segmentOf(s.count, n, sendSeg), rs = segmentOf(s.count, n, recvSeg);
    for (size_t j = 0; j < numChunks(ss, per); ++j) {
      const Span c = chunkOf(ss, per, j);
      const uint16_t from = step == 0 ? kSendBuffer : kRecvBuffer;
      sch.add(sendStep(next, sch.at(from, c.offset), c.count * es), depsOf(last[sendSeg][j]));
    }
    for (size_t j = 0; j < numChunks(rs, per); ++j) {
      const Span c = chunkOf(rs, per, j);
      last[recvSeg][j] = sch.add(recvReduceStep(prev, sch.at(kRecvBuffer, c.offset),
                                                sch.at(kSendBuffer, c.offset), c.count * es));
    }
  }
  if (s.op == bcclAvg) {
    const Span mine = segmentOf(s.count, n, r);
    for (size_t j = 0; j < numChunks(mine, per); ++j) {
      const Span c = chunkOf(mine, per, j);
      sch.add(scaleStep(sch.at(kRecvBuffer, c.offset), sch.at(kRecvBuffer, c.offset), c.count * es),
              depsOf(last[r][j]));
    }
  }
  return sch;
}

Schedule buildRingAllGatherSegments(const CollectiveShape& s) {
  Schedule sch = startSchedule(s, "ring");
  const size_t es = sch.elemSize;
  const int n = s.nranks, r = s.rank;
  const Span mine = segmentOf(s.count, n, r);
  if (!s.inPlace && mine.count > 0)
    sch.add(copyStep(sch.at(kRecvBuffer, mine.offset), sch.at(kSendBuffer, 0), mine.count * es));
  if (n == 1) return sch;
  const int next = modRank(r + 1, n), prev = modRank(r - 1, n);
  const size_t per = chunkElems(s.chunkBytes, es);
  std::vector<std::vector<uint32_t>> last(n);
  for (int i = 0; i < n; ++i) last[i].assign(numChunks(segmentOf(s.count, n, i), per), kNoStep);
  // Receives never land on segment r, so in place my own sends need no guard.
  for (int step = 0; step < n - 1; ++step) {
    const int sendSeg = modRank(r - step, n), recvSeg = modRank(r - step - 1, n);
    const Span ss = segmentOf(s.count, n, sendSeg), rs = segmentOf(s.count, n, recvSeg);
    for (size_t j = 0; j < numChunks(ss, per); ++j) {
      const Span c = chunkOf(ss, per, j);
      // My own segment goes out straight from the send buffer, not waiting for the copy.
      const BufRef src =
          step == 0 ? sch.at(kSendBuffer, c.offset - ss.offset) : sch.at(kRecvBuffer, c.offset);
      sch.add(sendStep(next, src, c.count * es), depsOf(last[sendSeg][j]));
    }
    for (size_t j = 0; j < numChunks(rs, per); ++j) {
      const Span c = chunkOf(rs, per, j);
      last[recvSeg][j] = sch.add(recvStep(prev, sch.at(kRecvBuffer, c.offset), c.count * es));
    }
  }
  return sch;
}

// ---- hierarchical allreduce -----------------------------------------------------------------

namespace {

// Sorted into the documented order; false unless every rank 0..n-1 is on exactly one host.
bool canonicalHosts(std::vector<std::vector<int>>* hosts, int n) {
  std::vector<int> seen(n, 0);
  for (auto& h : *hosts) {
    if (h.empty()) return false;
    std::sort(h.begin(), h.end());
    for (int r : h) {
      if (r < 0 || r >= n || seen[r]++ != 0) return false;
    }
  }
  std::sort(hosts->begin(), hosts->end());
  return std::count(seen.begin(), seen.end(), 1) == n;
}

// Among the H members of a rail or the host leaders: latency-bound segments use recursive
// doubling, larger ones the ring (same bytes on the wire per rank, pipelined).
Schedule crossHostAllReduce(const CollectiveShape& x) {
  if (x.count * dtypeSize(x.dtype) <= kHierRdMaxBytes) return buildRecursiveDoublingAllReduce(x);
  return buildRingAllReduce(x);
}

}  // namespace

Schedule buildHierarchicalAllReduce(const CollectiveShape& s,
                                    const std::vector<std::vector<int>>& hostList) {
  std::vector<std::vector<int>> hosts = hostList;
  if (!canonicalHosts(&hosts, s.nranks)) return buildRingAllReduce(s);
  Schedule sch = startSchedule(s, "hier");
  const size_t es = sch.elemSize;
  if (s.nranks == 1 || s.count == 0) {
    addSingleRankCopy(&sch, s);
    return sch;
  }
  const int numHosts = static_cast<int>(hosts.size());
  int h = 0, li = 0;  // my host and local index
  for (int k = 0; k < numHosts; ++k)
    for (size_t i = 0; i < hosts[k].size(); ++i)
      if (hosts[k][i] == s.rank) h = k, li = static_cast<int>(i);
  const int local = static_cast<int>(hosts[h].size());

  // In place, the send buffer is the receive buffer.
  ScheduleComposer comp(
      sch, {BufRef{kScratchBuffer, 0}, BufRef{s.inPlace ? kRecvBuffer : kSendBuffer, 0},
            BufRef{kRecvBuffer, 0}});
  const BufRef send{kSendBuffer, 0}, recv{kRecvBuffer, 0};
  // Sub-schedules sum; the average divides once, here, by the whole communicator's size.
  auto shapeFor = [&](int rank, int n, size_t count, bool inPlace) {
    CollectiveShape x = s;
    x.ringOrder.clear();  // the communicator's ring order means nothing in a subgroup
    x.rank = rank;
    x.nranks = n;
    x.count = count;
    x.root = 0;
    x.inPlace = inPlace;
    if (x.op == bcclAvg) x.op = bcclSum;
    return x;
  };
  auto scale = [&](const Span& span) {
    if (s.op != bcclAvg) return;
    const size_t per = chunkElems(s.chunkBytes, es);
    for (size_t j = 0; j < numChunks(span, per); ++j) {
      const Span c = chunkOf(span, per, j);
      const BufRef at{kRecvBuffer, c.offset * es};
      comp.addLocal(scaleStep(at, at, c.count * es));
    }
  };

  bool equal = true;
  for (const auto& host : hosts) equal = equal && static_cast<int>(host.size()) == local;
  if (equal) {
    // Rails: local rank li owns segment li of the host's sum, allreduces it with local rank li
    // of every other host, then the host allgathers the segments.
    const Span seg = segmentOf(s.count, local, li);
    const BufRef mine{kRecvBuffer, seg.offset * es};
    std::vector<int> rail;
    for (const auto& host : hosts) rail.push_back(host[li]);
    comp.append(buildRingReduceScatterSegments(shapeFor(li, local, s.count, s.inPlace)), hosts[h],
                {{}, send, recv});
    comp.append(crossHostAllReduce(shapeFor(h, numHosts, seg.count, true)), rail, {{}, mine, mine});
    scale(seg);
    comp.append(buildRingAllGatherSegments(shapeFor(li, local, s.count, true)), hosts[h],
                {{}, mine, recv});
    return sch;
  }
  // Leaders: each host's lowest rank gathers the host's sum, the leaders allreduce it, and
  // each leader broadcasts the result on its host. Only one rank per host uses the network.
  std::vector<int> leaders;
  for (const auto& host : hosts) leaders.push_back(host[0]);
  comp.append(buildChainReduce(shapeFor(li, local, s.count, s.inPlace)), hosts[h],
              {{}, send, recv});
  if (li == 0) {
    comp.append(crossHostAllReduce(shapeFor(h, numHosts, s.count, true)), leaders,
                {{}, recv, recv});
    scale(Span{0, s.count});
  }
  comp.append(buildChainBroadcast(shapeFor(li, local, s.count, true)), hosts[h], {{}, recv, recv});
  return sch;
}

}  // namespace bccl
