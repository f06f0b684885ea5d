#include "fault/fault_inject.h"

#include <signal.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

#include "core/comm.h"
#include "core/logging.h"
#include "core/params.h"

namespace bccl {
namespace {

const StringParam kFaultInject("BCCL_FAULT_INJECT", "",
                               "Inject failures: 'rank=R,op=N,action=kill|exit|stop|drop|path', "
                               "several separated by ';'");

struct FaultSpec {
  int rank = -1;
  long long op = -1;
  std::string action;
};

std::vector<FaultSpec> parseSpecs(const std::string& text) {
  std::vector<FaultSpec> specs;
  std::stringstream all(text);
  std::string one;
  while (std::getline(all, one, ';')) {
    FaultSpec spec;
    std::stringstream fields(one);
    std::string field;
    while (std::getline(fields, field, ',')) {
      size_t eq = field.find('=');
      if (eq == std::string::npos) continue;
      std::string key = field.substr(0, eq), value = field.substr(eq + 1);
      if (key == "rank") spec.rank = atoi(value.c_str());
      if (key == "op") spec.op = atoll(value.c_str());
      if (key == "action") spec.action = value;
    }
    if (spec.rank >= 0 && spec.op >= 0 && !spec.action.empty()) {
      specs.push_back(spec);
    } else if (!one.empty()) {
      BCCL_WARN("ignoring malformed BCCL_FAULT_INJECT entry '%s'", one.c_str());
    }
  }
  return specs;
}

}  // namespace

void maybeInjectFault(Communicator& comm, uint64_t opIndex) {
  static const std::vector<FaultSpec> specs = parseSpecs(kFaultInject.get());
  for (const FaultSpec& s : specs) {
    if (s.rank != comm.rank() || static_cast<uint64_t>(s.op) != opIndex) continue;
    BCCL_WARN("fault injection: %s at operation %llu", s.action.c_str(),
              static_cast<unsigned long long>(opIndex));
    if (s.action == "kill") raise(SIGKILL);
    if (s.action == "exit") _exit(1);
    if (s.action == "stop") raise(SIGSTOP);
    if (s.action == "drop") comm.dropConnections();
    if (s.action == "path" && comm.failOnePathEach() == 0)
      BCCL_WARN("fault injection: no connection has a second path to lose");
  }
}

}  // namespace bccl
