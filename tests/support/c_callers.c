/* Out-of-range enum arguments passed the way a C caller passes them (see c_callers.h). Being
 * C, this file also proves bccl.h compiles as C99. */
#include "support/c_callers.h"

bcclResult_t bccltestCallRaw(bccltestCall call, int rawType, int rawOp, const void* sendbuff,
                             void* recvbuff, size_t count, bcclComm_t comm) {
  const bcclDataType_t t = (bcclDataType_t)rawType;
  const bcclRedOp_t op = (bcclRedOp_t)rawOp;
  switch (call) {
    case bccltestAllReduce:
      return bcclAllReduce(sendbuff, recvbuff, count, t, op, comm, NULL);
    case bccltestAllGather:
      return bcclAllGather(sendbuff, recvbuff, count, t, comm, NULL);
    case bccltestReduceScatter:
      return bcclReduceScatter(sendbuff, recvbuff, count, t, op, comm, NULL);
    case bccltestBroadcast:
      return bcclBroadcast(sendbuff, recvbuff, count, t, 0, comm, NULL);
    case bccltestReduce:
      return bcclReduce(sendbuff, recvbuff, count, t, op, 0, comm, NULL);
    case bccltestAllToAll:
      return bcclAllToAll(sendbuff, recvbuff, count, t, comm, NULL);
    case bccltestSend:
      return bcclSend(sendbuff, count, t, 0, comm, NULL);
    case bccltestRecv:
      return bcclRecv(recvbuff, count, t, 0, comm, NULL);
    default:
      return bcclInternalError;
  }
}

const char* bccltestErrorStringRaw(int rawResult) {
  return bcclGetErrorString((bcclResult_t)rawResult);
}

const char* bccltestCallName(bccltestCall call) {
  static const char* const kNames[] = {"bcclAllReduce", "bcclAllGather", "bcclReduceScatter",
                                       "bcclBroadcast", "bcclReduce",    "bcclAllToAll",
                                       "bcclSend",      "bcclRecv"};
  return (int)call >= 0 && call < bccltestNumCalls ? kNames[call] : "?";
}
