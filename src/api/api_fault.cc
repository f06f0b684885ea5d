// Failure handling through the C API: what failed, revoke, and building new communicators from
// the survivors (shrink, split, agree).
#include <algorithm>

#include "api/api_support.h"
#include "fault/membership.h"

using namespace bccl;

namespace {

Status checkParent(bcclComm_t comm) {
  if (comm == nullptr || comm->impl == nullptr) return invalidArgument("comm is NULL");
  if (comm->impl->aborted()) return invalidUsage("comm was aborted");
  return Status::ok();
}

// A child's settings: the given config, or the parent's when NULL.
StatusOr<CommConfig> childConfig(bcclComm_t parent, const bcclConfig_t* config) {
  if (config == nullptr) return parent->impl->config();
  return resolveConfig(config);
}

// Runs a membership change with the parent marked busy, so it cannot be freed meanwhile.
StatusOr<ChildResult> runChild(bcclComm_t parent, const ChildRequest& req, const CommConfig& cfg) {
  parent->users.fetch_add(1);
  StatusOr<ChildResult> out = runChildOp(*parent->impl, req, cfg);
  parent->users.fetch_sub(1);
  return out;
}

bcclComm_t wrap(std::unique_ptr<Communicator> impl) {
  if (impl == nullptr) return nullptr;
  auto handle = std::make_unique<bcclComm>();
  handle->impl = std::move(impl);
  return handle.release();
}

}  // namespace

extern "C" {

bcclResult_t bcclCommGetFailedRanks(bcclComm_t comm, int* ranks, int maxRanks, int* count) {
  return guardedCall("bcclCommGetFailedRanks", comm, [&] {
    if (comm == nullptr || comm->impl == nullptr) return invalidArgument("comm is NULL");
    if (count == nullptr) return invalidArgument("count is NULL");
    if (maxRanks < 0 || (maxRanks > 0 && ranks == nullptr))
      return invalidArgument("ranks is NULL or maxRanks is negative");
    std::vector<int> failed = comm->impl->failedRanks();
    *count = static_cast<int>(failed.size());
    std::copy_n(failed.begin(), std::min<size_t>(failed.size(), static_cast<size_t>(maxRanks)),
                ranks);
    return Status::ok();
  });
}

bcclResult_t bcclCommRevoke(bcclComm_t comm) {
  return guardedCall("bcclCommRevoke", comm, [&] {
    BCCL_RETURN_IF_ERROR(checkParent(comm));
    comm->impl->revoke();
    return Status::ok();
  });
}

bcclResult_t bcclCommShrink(bcclComm_t comm, const int* excludeRanks, int excludeCount,
                            bcclComm_t* newcomm, bcclConfig_t* config, int flags) {
  return guardedCall("bcclCommShrink", comm, [&] {
    BCCL_RETURN_IF_ERROR(checkParent(comm));
    if (newcomm == nullptr) return invalidArgument("newcomm is NULL");
    *newcomm = nullptr;
    if (excludeCount < 0 || (excludeCount > 0 && excludeRanks == nullptr))
      return invalidArgument("excludeRanks is NULL or excludeCount is negative");
    if (flags != BCCL_SHRINK_DEFAULT && flags != BCCL_SHRINK_ABORT)
      return invalidArgument("flags must be BCCL_SHRINK_DEFAULT or BCCL_SHRINK_ABORT");
    ChildRequest req;
    req.op = ChildOp::kShrink;
    for (int i = 0; i < excludeCount; ++i) {
      if (excludeRanks[i] < 0 || excludeRanks[i] >= comm->impl->nranks())
        return invalidArgument("excludeRanks[" + std::to_string(i) +
                               "] = " + std::to_string(excludeRanks[i]) + " is out of range");
      req.exclude.push_back(excludeRanks[i]);
    }
    StatusOr<CommConfig> cfg = childConfig(comm, config);
    if (!cfg.isOk()) return cfg.status();
    // Operations still waiting on the failed ranks end now rather than at their deadline.
    if (flags == BCCL_SHRINK_ABORT)
      comm->impl->recordError(remoteError("communicator is being shrunk"));
    StatusOr<ChildResult> out = runChild(comm, req, cfg.value());
    if (!out.isOk()) return out.status();
    *newcomm = wrap(std::move(out.value().comm));
    return Status::ok();
  });
}

bcclResult_t bcclCommAgree(bcclComm_t comm, int* flag) {
  return guardedCall("bcclCommAgree", comm, [&] {
    BCCL_RETURN_IF_ERROR(checkParent(comm));
    if (flag == nullptr) return invalidArgument("flag is NULL");
    ChildRequest req;
    req.op = ChildOp::kAgree;
    req.flag = *flag;
    StatusOr<ChildResult> out = runChild(comm, req, comm->impl->config());
    if (!out.isOk()) return out.status();
    *flag = out.value().agreedFlag;
    return Status::ok();
  });
}

bcclResult_t bcclCommSplit(bcclComm_t comm, int color, int key, bcclComm_t* newcomm,
                           bcclConfig_t* config) {
  return guardedCall("bcclCommSplit", comm, [&] {
    BCCL_RETURN_IF_ERROR(checkParent(comm));
    if (newcomm == nullptr) return invalidArgument("newcomm is NULL");
    *newcomm = nullptr;
    if (color < 0 && color != BCCL_SPLIT_NOCOLOR)
      return invalidArgument("color must be non-negative or BCCL_SPLIT_NOCOLOR");
    ChildRequest req;
    req.op = ChildOp::kSplit;
    req.color = color;
    req.key = key;
    StatusOr<CommConfig> cfg = childConfig(comm, config);
    if (!cfg.isOk()) return cfg.status();
    StatusOr<ChildResult> out = runChild(comm, req, cfg.value());
    if (!out.isOk()) return out.status();
    *newcomm = wrap(std::move(out.value().comm));
    return Status::ok();
  });
}

}  // extern "C"
