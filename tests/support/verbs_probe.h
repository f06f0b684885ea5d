// Whether the verbs transport can run here, for public-API tests that include verbs cases. The
// answer comes from the library itself: a child process creates a one-rank communicator with
// transports "verbs" (which opens the RDMA port exactly as a real communicator does) and reports
// back. A child, because the probing process must stay free of library threads: the process
// tier forks its ranks, and thread tiers must not fork once rank threads exist. So call
// ProbeVerbs() first in a process (AddVerbsProbeEnvironment does it before any test runs).
//
// On a host without RDMA, verbs cases skip with the probe's reason; with
// BCCL_TEST_REQUIRE_VERBS=1 (set by the soft-RoCE VM runner) they fail instead, so a run that
// was meant to test verbs can never pass by skipping.
#ifndef BCCL_TESTS_SUPPORT_VERBS_PROBE_H_
#define BCCL_TESTS_SUPPORT_VERBS_PROBE_H_

#include <gtest/gtest.h>

#include <string>

namespace bccltest {

struct VerbsProbe {
  bool usable = false;
  std::string reason;  // why not, when !usable
};

// Probed once per process, then remembered.
const VerbsProbe& ProbeVerbs();
bool VerbsRequired();
// Registers a gtest environment that probes before the first test, when the filter may select
// a verbs case.
void AddVerbsProbeEnvironment();

}  // namespace bccltest

// In a TEST body: skip (or, when required, fail) unless verbs is usable here.
#define BCCL_SKIP_UNLESS_VERBS()                                                      \
  do {                                                                                \
    const ::bccltest::VerbsProbe& probe_ = ::bccltest::ProbeVerbs();                  \
    if (!probe_.usable) {                                                             \
      if (::bccltest::VerbsRequired()) FAIL() << "verbs required: " << probe_.reason; \
      GTEST_SKIP() << "verbs not usable here: " << probe_.reason;                     \
    }                                                                                 \
  } while (0)

#endif  // BCCL_TESTS_SUPPORT_VERBS_PROBE_H_
