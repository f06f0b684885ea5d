#include "support/verbs_probe.h"

#include <cstdlib>
#include <cstring>

#include "support/process_ranks.h"

namespace bccltest {
namespace {

VerbsProbe RunProbe() {
  VerbsProbe p;
  ProcessRanks child(1, 60000);
  bool ran = child.Run([](ChildEnv& env) {
    bcclComm_t comm = nullptr;
    bcclResult_t res = env.InitComm(&comm, "verbs", 20000);
    if (res != bcclSuccess) {
      const char* why = bcclGetLastError(nullptr);
      env.Report(std::string("unusable ") + (why != nullptr ? why : "(no message)"));
      return 0;
    }
    bcclCommDestroy(comm);
    env.Report("usable");
    return 0;
  });
  if (!ran) {
    p.reason = "the probe could not run: " + child.error();
    return p;
  }
  if (!child.LinesWith(0, "usable").empty()) {
    p.usable = true;
    return p;
  }
  const auto why = child.LinesWith(0, "unusable ");
  p.reason = why.empty() ? "the probe process failed:" + child.Summary() : why[0];
  return p;
}

class ProbeEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const std::string filter = ::testing::GTEST_FLAG(filter);
    if (filter == "*" || filter.find("verbs") != std::string::npos) ProbeVerbs();
  }
};

}  // namespace

const VerbsProbe& ProbeVerbs() {
  static const VerbsProbe probe = RunProbe();
  return probe;
}

bool VerbsRequired() {
  const char* v = std::getenv("BCCL_TEST_REQUIRE_VERBS");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

void AddVerbsProbeEnvironment() { ::testing::AddGlobalTestEnvironment(new ProbeEnvironment); }

}  // namespace bccltest
