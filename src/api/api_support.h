// The C boundary's discipline in one place: turn a Status into a result code, remember the
// message for bcclGetLastError, and make sure no C++ exception (e.g. std::bad_alloc) escapes.
#pragma once

#include <exception>
#include <string>

#include "api/handles.h"
#include "core/logging.h"
#include "core/status.h"

namespace bccl {

void setThreadLastError(const std::string& message);
const char* threadLastError();

inline bcclResult_t finishCall(const char* call, bcclComm* comm, const Status& st) {
  if (st.isOk()) return bcclSuccess;
  std::string message = std::string(call) + ": " + st.message();
  setThreadLastError(message);
  if (comm != nullptr && comm->impl != nullptr) comm->impl->setLastError(message);
  BCCL_INFO("%s -> %s", call, message.c_str());
  return st.code();
}

// Runs `body` (returning Status) with the API's guarantees.
template <typename Body>
bcclResult_t guardedCall(const char* call, bcclComm* comm, Body&& body) {
  try {
    ScopedLogRank tag(comm != nullptr && comm->impl != nullptr ? comm->impl->rank() : -1);
    return finishCall(call, comm, body());
  } catch (const std::bad_alloc&) {
    return finishCall(call, comm, systemError("out of memory"));
  } catch (const std::exception& e) {
    return finishCall(call, comm, internalError(std::string("unexpected exception: ") + e.what()));
  } catch (...) {
    return finishCall(call, comm, internalError("unexpected exception"));
  }
}

}  // namespace bccl
