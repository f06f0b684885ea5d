// Declarations for c_callers.c: calls that pass raw integers where the API takes an enum.
// C lets any int travel in an enum parameter, and C programs (and FFI layers such as ctypes)
// do exactly that, whereas a C++ cast of an out-of-range value is itself undefined behaviour.
// Making such calls from C keeps the tests free of UB, so any sanitizer report is the library's.
#ifndef BCCL_TESTS_SUPPORT_C_CALLERS_H_
#define BCCL_TESTS_SUPPORT_C_CALLERS_H_

#include <bccl/bccl.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  bccltestAllReduce,
  bccltestAllGather,
  bccltestReduceScatter,
  bccltestBroadcast,
  bccltestReduce,
  bccltestAllToAll,
  bccltestSend,
  bccltestRecv,
  bccltestNumCalls
} bccltestCall;

/* Calls `call` with `rawType` as its datatype and `rawOp` as its op (where it has one), root
 * and peer 0, on a NULL stream. */
bcclResult_t bccltestCallRaw(bccltestCall call, int rawType, int rawOp, const void* sendbuff,
                             void* recvbuff, size_t count, bcclComm_t comm);
const char* bccltestErrorStringRaw(int rawResult);
const char* bccltestCallName(bccltestCall call);

#ifdef __cplusplus
}
#endif

#endif  // BCCL_TESTS_SUPPORT_C_CALLERS_H_
