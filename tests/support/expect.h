// Assertion helpers shared by the misuse tests: a failing call must return the documented
// code and leave a message, so both are checked at the caller's line.
#ifndef BCCL_TESTS_SUPPORT_EXPECT_H_
#define BCCL_TESTS_SUPPORT_EXPECT_H_

#include <bccl/bccl.h>
#include <gtest/gtest.h>

// The code and a non-empty message for this thread's last failure.
#define EXPECT_BCCL_FAIL(want, call)                                    \
  do {                                                                  \
    const bcclResult_t got_ = (call);                                   \
    EXPECT_EQ(got_, (want)) << #call;                                   \
    const char* msg_ = bcclGetLastError(nullptr);                       \
    EXPECT_NE(msg_, nullptr) << #call;                                  \
    EXPECT_STRNE(msg_ ? msg_ : "", "") << "no message after " << #call; \
  } while (0)

#endif  // BCCL_TESTS_SUPPORT_EXPECT_H_
