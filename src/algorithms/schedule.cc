#include "algorithms/schedule.h"

#include <sstream>

namespace bccl {

uint32_t Schedule::add(const Step& step, std::initializer_list<uint32_t> after) {
  return add(step, std::vector<uint32_t>(after));
}

uint32_t Schedule::add(const Step& step, const std::vector<uint32_t>& after) {
  Step s = step;
  s.depBegin = static_cast<uint32_t>(deps.size());
  s.depCount = static_cast<uint32_t>(after.size());
  deps.insert(deps.end(), after.begin(), after.end());
  steps.push_back(s);
  return static_cast<uint32_t>(steps.size() - 1);
}

std::string Schedule::describe() const {
  static const char* names[] = {"SEND", "RECV", "RECV_REDUCE", "COPY", "SCALE"};
  std::ostringstream out;
  out << algorithm << " rank " << rank << "/" << nranks << " steps=" << steps.size() << "\n";
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    out << "  #" << i << " " << names[static_cast<int>(s.kind)];
    if (s.peer >= 0) out << " peer=" << s.peer;
    out << " src=b" << s.src.buffer << "+" << s.src.offset << " dst=b" << s.dst.buffer << "+"
        << s.dst.offset << " bytes=" << s.bytes;
    if (s.depCount > 0) {
      out << " after";
      for (uint32_t d = 0; d < s.depCount; ++d) out << " #" << deps[s.depBegin + d];
    }
    out << "\n";
  }
  return out.str();
}

Step sendStep(int peer, BufRef src, size_t bytes) {
  Step s;
  s.kind = StepKind::kSend;
  s.peer = peer;
  s.src = src;
  s.bytes = bytes;
  return s;
}

Step recvStep(int peer, BufRef dst, size_t bytes) {
  Step s;
  s.kind = StepKind::kRecv;
  s.peer = peer;
  s.dst = dst;
  s.bytes = bytes;
  return s;
}

Step recvReduceStep(int peer, BufRef dst, BufRef operand, size_t bytes) {
  Step s;
  s.kind = StepKind::kRecvReduce;
  s.peer = peer;
  s.dst = dst;
  s.src = operand;
  s.bytes = bytes;
  return s;
}

Step copyStep(BufRef dst, BufRef src, size_t bytes) {
  Step s;
  s.kind = StepKind::kCopy;
  s.src = src;
  s.dst = dst;
  s.bytes = bytes;
  return s;
}

Step scaleStep(BufRef dst, BufRef src, size_t bytes) {
  Step s;
  s.kind = StepKind::kScale;
  s.src = src;
  s.dst = dst;
  s.bytes = bytes;
  return s;
}

}  // namespace bccl
