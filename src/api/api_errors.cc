// Result codes in words, and the last error of each thread.
#include <string>

#include "api/api_support.h"

namespace bccl {
namespace {
thread_local std::string tlsLastError;
}  // namespace

void setThreadLastError(const std::string& message) { tlsLastError = message; }
const char* threadLastError() { return tlsLastError.c_str(); }

}  // namespace bccl

extern "C" const char* bcclGetErrorString(bcclResult_t result) {
  switch (result) {
    case bcclSuccess:
      return "no error";
    case bcclUnhandledError:
      return "unhandled error";
    case bcclSystemError:
      return "system error (a system call or allocation failed)";
    case bcclInternalError:
      return "internal error (a bug in bccl)";
    case bcclInvalidArgument:
      return "invalid argument";
    case bcclInvalidUsage:
      return "invalid usage";
    case bcclRemoteError:
      return "remote error (a peer failed, vanished or the communicator was aborted)";
    case bcclInProgress:
      return "operation in progress";
    case bcclTimeout:
      return "timeout (no progress before the deadline)";
    default:
      return "unknown result code";
  }
}

extern "C" const char* bcclGetLastError(bcclComm_t comm) {
  if (comm == nullptr || comm->impl == nullptr) return bccl::threadLastError();
  return comm->impl->lastError();
}
