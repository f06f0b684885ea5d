// See rendezvous_check.h: a monotone replay to a fixed point, so the result does not depend on
// the order ranks are visited in.
#include "rendezvous_check.h"

#include <map>
#include <utility>

namespace bccl::sim {
namespace {

bool isMessage(StepKind k) { return k != StepKind::kCopy && k != StepKind::kScale; }

struct StepState {
  int match = -1;        // the peer's matching step
  int queuedAfter = -1;  // the previous step of the same peer and direction
  bool posted = false;
  bool done = false;
};

}  // namespace

std::string rendezvousDeadlock(const std::vector<Schedule>& s) {
  const int n = static_cast<int>(s.size());
  std::vector<std::vector<StepState>> st(n);
  std::map<std::pair<int, int>, std::vector<uint32_t>> sends, recvs;  // (from, to), in order
  for (int r = 0; r < n; ++r) {
    st[r].resize(s[r].steps.size());
    for (uint32_t i = 0; i < s[r].steps.size(); ++i) {
      const Step& step = s[r].steps[i];
      if (!isMessage(step.kind)) continue;
      if (step.peer < 0 || step.peer >= n) return "rank " + std::to_string(r) + " bad peer";
      auto& queue = step.kind == StepKind::kSend ? sends[{r, step.peer}] : recvs[{step.peer, r}];
      if (!queue.empty()) st[r][i].queuedAfter = static_cast<int>(queue.back());
      queue.push_back(i);
    }
  }
  for (const auto& [link, out] : sends) {
    const auto& in = recvs[link];
    if (in.size() != out.size())
      return "rank " + std::to_string(link.first) + " sends " + std::to_string(out.size()) +
             " messages to rank " + std::to_string(link.second) + ", which receives " +
             std::to_string(in.size());
    for (size_t k = 0; k < in.size(); ++k) {
      st[link.first][out[k]].match = static_cast<int>(in[k]);
      st[link.second][in[k]].match = static_cast<int>(out[k]);
    }
  }
  for (bool moved = true; moved;) {
    moved = false;
    for (int r = 0; r < n; ++r)
      for (uint32_t i = 0; i < s[r].steps.size(); ++i) {
        StepState& me = st[r][i];
        if (me.done) continue;
        const Step& step = s[r].steps[i];
        bool ready = true;
        for (uint32_t d = 0; d < step.depCount && ready; ++d)
          ready = st[r][s[r].deps[step.depBegin + d]].done;
        if (!isMessage(step.kind)) {
          me.done = ready;
          moved = moved || ready;
          continue;
        }
        if (me.match < 0)
          return "rank " + std::to_string(r) + " step #" + std::to_string(i) + " has no match";
        if (!me.posted && ready && (me.queuedAfter < 0 || st[r][me.queuedAfter].posted)) {
          me.posted = true;
          moved = true;
        }
        const StepState& other = st[step.peer][me.match];
        if (me.posted && (step.kind == StepKind::kSend ? other.done : other.posted)) {
          me.done = true;
          moved = true;
        }
      }
  }
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < st[r].size(); ++i)
      if (!st[r][i].done)
        return "rank " + std::to_string(r) + " step #" + std::to_string(i) + " never completes";
  return "";
}

}  // namespace bccl::sim
