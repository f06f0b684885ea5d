#include "schedule_sim.h"

#include <algorithm>
#include <random>
#include <sstream>

namespace bccl::sim {

Sym input(int rank, int nranks, long index) {
  Sym s;
  s.valid = true;
  s.tag = index;
  s.counts.assign(nranks, 0);
  s.counts[rank] = 1;
  return s;
}

std::string describe(const Sym& s) {
  if (!s.valid) return "<unwritten>";
  std::ostringstream o;
  o << "tag " << s.tag << " from {";
  for (size_t r = 0; r < s.counts.size(); ++r)
    if (s.counts[r] != 0) o << " r" << r << "x" << s.counts[r];
  o << " } scaled " << s.scaled;
  return o.str();
}

namespace {

struct Message {
  std::vector<Sym> data;
  std::vector<bool> knowledge;  // ranks the sending step causally follows
};

void merge(std::vector<bool>& into, const std::vector<bool>& from) {
  for (size_t i = 0; i < into.size(); ++i) into[i] = into[i] || from[i];
}

// Resolves a buffer reference to a pointer into the rank's memory or scratch.
Sym* resolve(RankState& st, const BufRef& ref, size_t es, size_t elems, std::string* err) {
  size_t first = ref.offset / es;
  if (ref.offset % es != 0) {
    *err = "offset not element-aligned";
    return nullptr;
  }
  std::vector<Sym>* area = nullptr;
  size_t base = 0, limit = 0;
  if (ref.buffer == kScratchBuffer) {
    area = &st.scratch;
    limit = st.scratch.size();
  } else if (ref.buffer == 1) {
    area = &st.memory;
    base = st.layout.sendOffset;
    limit = st.layout.sendCount;
  } else if (ref.buffer == 2) {
    area = &st.memory;
    base = st.layout.recvOffset;
    limit = st.layout.recvCount;
  } else {
    *err = "unknown buffer " + std::to_string(ref.buffer);
    return nullptr;
  }
  if (first + elems > limit) {
    *err = "access past the end of buffer " + std::to_string(ref.buffer);
    return nullptr;
  }
  return area->data() + base + first;
}

Sym combine(const Sym& a, const Sym& b, std::string* err) {
  if (!a.valid || !b.valid) {
    *err = "reduction reads an unwritten element";
    return a;
  }
  if (a.tag != b.tag || a.counts.size() != b.counts.size()) {
    *err = "reduction mixes element " + std::to_string(a.tag) + " with " + std::to_string(b.tag);
    return a;
  }
  if (a.scaled != 0 || b.scaled != 0) *err = "reduction of an already averaged value";
  Sym out = a;
  for (size_t r = 0; r < out.counts.size(); ++r) out.counts[r] += b.counts[r];
  return out;
}

}  // namespace

std::string simulate(std::vector<RankState>& ranks, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int n = static_cast<int>(ranks.size());
  std::map<std::pair<int, int>, std::deque<Message>> channels;  // (from, to)
  std::vector<std::vector<int>> state(n);                       // 0 waiting, 1 done
  std::vector<std::vector<std::vector<bool>>> stepKnows(n);
  std::vector<std::map<int, size_t>> sendCursor(n), recvCursor(n);
  std::vector<std::map<int, std::vector<uint32_t>>> sendOrder(n), recvOrder(n);
  for (int r = 0; r < n; ++r) {
    Schedule& s = ranks[r].schedule;
    Sym blank;
    if (ranks[r].scratchHoldsTokens) blank = input(r, n, -1);
    ranks[r].scratch.assign(s.scratchBytes / s.elemSize + 1, blank);
    state[r].assign(s.steps.size(), 0);
    stepKnows[r].assign(s.steps.size(), std::vector<bool>(n, false));
    for (uint32_t i = 0; i < s.steps.size(); ++i) {
      const Step& st = s.steps[i];
      if (st.kind == StepKind::kSend) sendOrder[r][st.peer].push_back(i);
      if (st.kind == StepKind::kRecv || st.kind == StepKind::kRecvReduce)
        recvOrder[r][st.peer].push_back(i);
      if (st.peer == r) return "rank " + std::to_string(r) + " messages itself";
      if (st.peer >= n) return "peer out of range";
      for (uint32_t d = 0; d < st.depCount; ++d)
        if (s.deps[st.depBegin + d] >= i) return "dependency on a later step";
    }
  }
  auto ready = [&](int r, uint32_t i) {
    const Schedule& s = ranks[r].schedule;
    const Step& st = s.steps[i];
    for (uint32_t d = 0; d < st.depCount; ++d)
      if (state[r][s.deps[st.depBegin + d]] == 0) return false;
    return true;
  };
  bool moved = true;
  while (moved) {
    moved = false;
    for (int r = 0; r < n; ++r) {
      RankState& rs = ranks[r];
      const Schedule& s = rs.schedule;
      const size_t es = s.elemSize;
      std::vector<uint32_t> order(s.steps.size());
      for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
      if (seed != 0) std::shuffle(order.begin(), order.end(), rng);
      for (uint32_t i : order) {
        if (state[r][i] != 0 || !ready(r, i)) continue;
        const Step& st = s.steps[i];
        const size_t elems = st.bytes / es;
        std::string err;
        std::string where = "rank " + std::to_string(r) + " step #" + std::to_string(i) + ": ";
        std::vector<bool> knows(n, false);
        knows[r] = true;
        for (uint32_t d = 0; d < st.depCount; ++d)
          merge(knows, stepKnows[r][s.deps[st.depBegin + d]]);
        if (st.kind == StepKind::kSend) {
          if (sendOrder[r][st.peer][sendCursor[r][st.peer]] != i) continue;  // FIFO posting order
          Sym* src = resolve(rs, st.src, es, elems, &err);
          if (!err.empty()) return where + err;
          Message m{std::vector<Sym>(src, src + elems), knows};
          for (const Sym& v : m.data)
            if (!v.valid) return where + "sends an unwritten element";
          channels[{r, st.peer}].push_back(std::move(m));
          ++sendCursor[r][st.peer];
        } else if (st.kind == StepKind::kRecv || st.kind == StepKind::kRecvReduce) {
          if (recvOrder[r][st.peer][recvCursor[r][st.peer]] != i) continue;
          auto& ch = channels[{st.peer, r}];
          if (ch.empty()) continue;
          Message m = std::move(ch.front());
          ch.pop_front();
          merge(knows, m.knowledge);
          if (m.data.size() != elems)
            return where + "received " + std::to_string(m.data.size()) + " elements, expected " +
                   std::to_string(elems);
          Sym* dst = resolve(rs, st.dst, es, elems, &err);
          if (!err.empty()) return where + err;
          if (st.kind == StepKind::kRecv) {
            for (size_t k = 0; k < elems; ++k) dst[k] = m.data[k];
          } else {
            Sym* operand = resolve(rs, st.src, es, elems, &err);
            if (!err.empty()) return where + err;
            for (size_t k = 0; k < elems; ++k) {
              dst[k] = combine(operand[k], m.data[k], &err);
              if (!err.empty()) return where + err;
            }
          }
          ++recvCursor[r][st.peer];
        } else {
          Sym* dst = resolve(rs, st.dst, es, elems, &err);
          Sym* src = err.empty() ? resolve(rs, st.src, es, elems, &err) : nullptr;
          if (!err.empty()) return where + err;
          std::vector<Sym> tmp(src, src + elems);
          for (size_t k = 0; k < elems; ++k) {
            if (!tmp[k].valid) return where + "local step reads an unwritten element";
            dst[k] = tmp[k];
            if (st.kind == StepKind::kScale) ++dst[k].scaled;
          }
        }
        state[r][i] = 1;
        stepKnows[r][i] = knows;
        moved = true;
      }
    }
  }
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < state[r].size(); ++i)
      if (state[r][i] == 0)
        return "deadlock: rank " + std::to_string(r) + " step #" + std::to_string(i) +
               " never ran\n" + ranks[r].schedule.describe();
  for (int r = 0; r < n; ++r) {
    ranks[r].knows.assign(n, false);
    ranks[r].knows[r] = true;
    for (const auto& k : stepKnows[r]) merge(ranks[r].knows, k);
  }
  for (auto& kv : channels)
    if (!kv.second.empty())
      return "rank " + std::to_string(kv.first.first) + " sent a message rank " +
             std::to_string(kv.first.second) + " never received";
  return "";
}

}  // namespace bccl::sim
