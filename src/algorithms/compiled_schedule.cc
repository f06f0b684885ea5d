#include "algorithms/compiled_schedule.h"

#include <atomic>
#include <unordered_map>

namespace bccl {

std::shared_ptr<const CompiledSchedule> compileSchedule(Schedule schedule) {
  auto c = std::make_shared<CompiledSchedule>();
  c->schedule = std::move(schedule);
  const Schedule& s = c->schedule;
  const size_t n = s.steps.size();
  c->dependentsBegin.assign(n + 1, 0);
  for (size_t i = 0; i < n; ++i)
    for (uint32_t d = 0; d < s.steps[i].depCount; ++d)
      ++c->dependentsBegin[s.deps[s.steps[i].depBegin + d] + 1];
  for (size_t i = 0; i < n; ++i) c->dependentsBegin[i + 1] += c->dependentsBegin[i];
  c->dependents.resize(s.deps.size());
  std::vector<uint32_t> fill(c->dependentsBegin.begin(), c->dependentsBegin.end() - 1);
  for (size_t i = 0; i < n; ++i)
    for (uint32_t d = 0; d < s.steps[i].depCount; ++d)
      c->dependents[fill[s.deps[s.steps[i].depBegin + d]]++] = static_cast<uint32_t>(i);
  std::unordered_map<int, size_t> queueOfPeer;
  c->queueOfStep.assign(n, -1);
  for (size_t i = 0; i < n; ++i) {
    const Step& st = s.steps[i];
    if (st.kind == StepKind::kCopy || st.kind == StepKind::kScale) {
      if (st.depCount == 0) c->readyAtStart.push_back(static_cast<uint32_t>(i));
      continue;
    }
    auto it = queueOfPeer.find(st.peer);
    if (it == queueOfPeer.end()) {
      it = queueOfPeer.emplace(st.peer, c->peers.size()).first;
      c->peers.push_back(CompiledSchedule::PeerSteps{st.peer, {}, {}});
    }
    c->queueOfStep[i] = static_cast<int32_t>(it->second);
    (st.kind == StepKind::kSend ? c->peers[it->second].sends : c->peers[it->second].recvs)
        .push_back(static_cast<uint32_t>(i));
  }
  return c;
}

namespace {

std::atomic<uint64_t> nextCacheId{1};

// This thread's last hit, by cache id: a destroyed communicator's id is never reused, so an
// entry left behind by one can never match another's call.
struct LastHit {
  uint64_t cache = 0;
  ScheduleKey key{};
  std::shared_ptr<const CompiledSchedule> schedule;
};
thread_local LastHit tlsLastHit;

}  // namespace

ScheduleCache::ScheduleCache() : id_(nextCacheId.fetch_add(1)) {}

std::shared_ptr<const CompiledSchedule> ScheduleCache::find(const ScheduleKey& key) {
  LastHit& last = tlsLastHit;
  if (last.cache == id_ && last.key == key) return last.schedule;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (it->first == key) {
      entries_.splice(entries_.begin(), entries_, it);
      last = LastHit{id_, key, entries_.front().second};
      return entries_.front().second;
    }
  return nullptr;
}

void ScheduleCache::insert(const ScheduleKey& key,
                           std::shared_ptr<const CompiledSchedule> schedule) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.emplace_front(key, std::move(schedule));
  if (entries_.size() > kCapacity) entries_.pop_back();
}

}  // namespace bccl
