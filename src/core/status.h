// The one internal error model: a Status carries a code (numerically equal to the public
// bcclResult_t) and a message, and StatusOr<T> carries a value or a Status. Exceptions are not
// used inside bccl, so nothing can escape through the C ABI.
#pragma once

#include <string>
#include <utility>

#include "bccl/bccl.h"

namespace bccl {

class Status {
 public:
  Status() = default;
  Status(bcclResult_t code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }
  bool isOk() const { return code_ == bcclSuccess; }
  bcclResult_t code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes context ("allreduce: ") so a low-level failure reads well at the top.
  Status withContext(const std::string& context) const {
    if (isOk()) return *this;
    Status s(code_, context + ": " + message_);
    s.failedPeer_ = failedPeer_;
    return s;
  }

  // The rank whose failure caused this error, or -1: lets the failure detector spread the news.
  int failedPeer() const { return failedPeer_; }
  Status blaming(int peer) const {
    Status s = *this;
    s.failedPeer_ = peer;
    return s;
  }

 private:
  bcclResult_t code_ = bcclSuccess;
  std::string message_;
  int failedPeer_ = -1;
};

inline Status invalidArgument(std::string m) { return Status(bcclInvalidArgument, std::move(m)); }
inline Status invalidUsage(std::string m) { return Status(bcclInvalidUsage, std::move(m)); }
inline Status systemError(std::string m) { return Status(bcclSystemError, std::move(m)); }
inline Status internalError(std::string m) { return Status(bcclInternalError, std::move(m)); }
inline Status remoteError(std::string m) { return Status(bcclRemoteError, std::move(m)); }
inline Status timeoutError(std::string m) { return Status(bcclTimeout, std::move(m)); }
// A system call failed: the message names the call and errno's text.
Status errnoStatus(const std::string& what, int err);

template <typename T>
class StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}          // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {}  // NOLINT
  bool isOk() const { return status_.isOk(); }
  const Status& status() const { return status_; }
  T& value() { return value_; }
  const T& value() const { return value_; }

 private:
  Status status_;
  T value_{};
};

}  // namespace bccl

#define BCCL_RETURN_IF_ERROR(expr)         \
  do {                                     \
    ::bccl::Status _bccl_st = (expr);      \
    if (!_bccl_st.isOk()) return _bccl_st; \
  } while (0)
