// Host streams through the C API.
#include "api/api_support.h"

using namespace bccl;

extern "C" {

bcclResult_t bcclStreamCreate(bcclStream_t* stream) {
  return guardedCall("bcclStreamCreate", nullptr, [&] {
    if (stream == nullptr) return invalidArgument("stream is NULL");
    *stream = new bcclStream();
    return Status::ok();
  });
}

bcclResult_t bcclStreamDestroy(bcclStream_t stream) {
  return guardedCall("bcclStreamDestroy", nullptr, [&] {
    if (stream == nullptr) return invalidArgument("stream is NULL");
    delete stream;  // runs what is queued first
    return Status::ok();
  });
}

bcclResult_t bcclStreamSynchronize(bcclStream_t stream) {
  return guardedCall("bcclStreamSynchronize", nullptr, [&] {
    if (stream == nullptr) return invalidArgument("stream is NULL");
    return stream->impl.synchronize();
  });
}

bcclResult_t bcclStreamQuery(bcclStream_t stream) {
  if (stream == nullptr) {
    bccl::setThreadLastError("bcclStreamQuery: stream is NULL");
    return bcclInvalidArgument;
  }
  return stream->impl.idle() ? bcclSuccess : bcclInProgress;
}

}  // extern "C"
