// The collective and point-to-point entry points: validate arguments, then launch now or, inside
// bcclGroupStart/End, remember the operation until the outermost group ends.
#include <cstring>
#include <vector>

#include "api/api_support.h"
#include "api/launch.h"
#include "core/dtype.h"

using namespace bccl;

namespace {

thread_local int tlsGroupDepth = 0;
thread_local std::vector<PendingOp> tlsGroupOps;

Status checkComm(bcclComm_t comm) {
  if (comm == nullptr || comm->impl == nullptr) return invalidArgument("comm is NULL");
  return comm->impl->health();
}

Status checkType(int dtype) {
  if (!isValidDtype(dtype))
    return invalidArgument("datatype " + std::to_string(dtype) + " is out of range");
  return Status::ok();
}

Status checkOp(int op) {
  if (!isValidRedOp(op))
    return invalidArgument("reduction op " + std::to_string(op) + " is out of range");
  return Status::ok();
}

Status checkBuffer(const void* buf, size_t count, const char* name) {
  if (buf == nullptr && count > 0)
    return invalidArgument(std::string(name) + " is NULL but count > 0");
  return Status::ok();
}

Status checkRank(int r, int nranks, const char* what) {
  if (r < 0 || r >= nranks)
    return invalidArgument(std::string(what) + " " + std::to_string(r) + " is out of range [0, " +
                           std::to_string(nranks) + ")");
  return Status::ok();
}

Status submit(bcclComm_t comm, const OpArgs& args, bcclStream_t stream) {
  PendingOp op{comm, args, stream};
  if (tlsGroupDepth > 0) {
    tlsGroupOps.push_back(op);
    return Status::ok();
  }
  return launchOne(op);
}

// Validates everything common to the collectives and submits. `make` builds the arguments once
// the datatype and op are known to be valid.
template <typename Make>
Status collective(bcclComm_t comm, int dtype, int op, Make make, bcclStream_t stream, bool reduces,
                  size_t sendCount, size_t recvCount) {
  BCCL_RETURN_IF_ERROR(checkComm(comm));
  BCCL_RETURN_IF_ERROR(checkType(dtype));
  if (reduces) BCCL_RETURN_IF_ERROR(checkOp(op));
  OpArgs a = make();
  BCCL_RETURN_IF_ERROR(checkBuffer(a.sendbuf, sendCount, "sendbuff"));
  BCCL_RETURN_IF_ERROR(checkBuffer(a.recvbuf, recvCount, "recvbuff"));
  return submit(comm, a, stream);
}

// An enum parameter may hold any int a C caller passed; reading it as the enum type would be
// undefined behaviour in C++, so its bytes are read as an int and checked before use.
template <typename Enum>
int rawEnum(const Enum& e) {
  int v;
  memcpy(&v, &e, sizeof(v));
  return v;
}

OpArgs makeArgs(CollKind kind, const void* send, void* recv, size_t count, int dtype, int op = 0,
                int root = 0) {
  OpArgs a;
  a.kind = kind;
  a.sendbuf = send;
  a.recvbuf = recv;
  a.count = count;
  a.dtype = static_cast<bcclDataType_t>(dtype);
  a.op = static_cast<bcclRedOp_t>(op);
  a.root = root;
  return a;
}

int nranksOf(bcclComm_t comm) { return comm != nullptr && comm->impl ? comm->impl->nranks() : 0; }
int rankOf(bcclComm_t comm) { return comm != nullptr && comm->impl ? comm->impl->rank() : -1; }

}  // namespace

extern "C" {

bcclResult_t bcclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           bcclDataType_t datatype, bcclRedOp_t op, bcclComm_t comm,
                           bcclStream_t stream) {
  return guardedCall("bcclAllReduce", comm, [&] {
    int dt = rawEnum(datatype), o = rawEnum(op);
    return collective(
        comm, dt, o,
        [&] { return makeArgs(CollKind::kAllReduce, sendbuff, recvbuff, count, dt, o); }, stream,
        true, count, count);
  });
}

bcclResult_t bcclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           bcclDataType_t datatype, bcclComm_t comm, bcclStream_t stream) {
  return guardedCall("bcclAllGather", comm, [&] {
    int dt = rawEnum(datatype);
    return collective(
        comm, dt, 0,
        [&] { return makeArgs(CollKind::kAllGather, sendbuff, recvbuff, sendcount, dt); }, stream,
        false, sendcount, sendcount);
  });
}

bcclResult_t bcclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               bcclDataType_t datatype, bcclRedOp_t op, bcclComm_t comm,
                               bcclStream_t stream) {
  return guardedCall("bcclReduceScatter", comm, [&] {
    int dt = rawEnum(datatype), o = rawEnum(op);
    return collective(
        comm, dt, o,
        [&] { return makeArgs(CollKind::kReduceScatter, sendbuff, recvbuff, recvcount, dt, o); },
        stream, true, recvcount, recvcount);
  });
}

bcclResult_t bcclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           bcclDataType_t datatype, int root, bcclComm_t comm,
                           bcclStream_t stream) {
  return guardedCall("bcclBroadcast", comm, [&] {
    BCCL_RETURN_IF_ERROR(checkComm(comm));
    BCCL_RETURN_IF_ERROR(checkRank(root, nranksOf(comm), "root"));
    // Only the root's send buffer is read.
    size_t sendCount = rankOf(comm) == root ? count : 0;
    int dt = rawEnum(datatype);
    return collective(
        comm, dt, 0,
        [&] { return makeArgs(CollKind::kBroadcast, sendbuff, recvbuff, count, dt, 0, root); },
        stream, false, sendCount, count);
  });
}

bcclResult_t bcclReduce(const void* sendbuff, void* recvbuff, size_t count, bcclDataType_t datatype,
                        bcclRedOp_t op, int root, bcclComm_t comm, bcclStream_t stream) {
  return guardedCall("bcclReduce", comm, [&] {
    BCCL_RETURN_IF_ERROR(checkComm(comm));
    BCCL_RETURN_IF_ERROR(checkRank(root, nranksOf(comm), "root"));
    // Only the root's receive buffer is written.
    size_t recvCount = rankOf(comm) == root ? count : 0;
    int dt = rawEnum(datatype), o = rawEnum(op);
    return collective(
        comm, dt, o,
        [&] { return makeArgs(CollKind::kReduce, sendbuff, recvbuff, count, dt, o, root); }, stream,
        true, count, recvCount);
  });
}

bcclResult_t bcclAllToAll(const void* sendbuff, void* recvbuff, size_t count,
                          bcclDataType_t datatype, bcclComm_t comm, bcclStream_t stream) {
  return guardedCall("bcclAllToAll", comm, [&] {
    int dt = rawEnum(datatype);
    return collective(
        comm, dt, 0, [&] { return makeArgs(CollKind::kAllToAll, sendbuff, recvbuff, count, dt); },
        stream, false, count, count);
  });
}

bcclResult_t bcclSend(const void* sendbuff, size_t count, bcclDataType_t datatype, int peer,
                      bcclComm_t comm, bcclStream_t stream) {
  return guardedCall("bcclSend", comm, [&] {
    BCCL_RETURN_IF_ERROR(checkComm(comm));
    BCCL_RETURN_IF_ERROR(checkRank(peer, nranksOf(comm), "peer"));
    int dt = rawEnum(datatype);
    auto make = [&] {
      OpArgs a = makeArgs(CollKind::kSend, sendbuff, nullptr, count, dt);
      a.peer = peer;
      return a;
    };
    return collective(comm, dt, 0, make, stream, false, count, 0);
  });
}

bcclResult_t bcclRecv(void* recvbuff, size_t count, bcclDataType_t datatype, int peer,
                      bcclComm_t comm, bcclStream_t stream) {
  return guardedCall("bcclRecv", comm, [&] {
    BCCL_RETURN_IF_ERROR(checkComm(comm));
    BCCL_RETURN_IF_ERROR(checkRank(peer, nranksOf(comm), "peer"));
    int dt = rawEnum(datatype);
    auto make = [&] {
      OpArgs a = makeArgs(CollKind::kRecv, nullptr, recvbuff, count, dt);
      a.peer = peer;
      return a;
    };
    return collective(comm, dt, 0, make, stream, false, 0, count);
  });
}

bcclResult_t bcclBarrier(bcclComm_t comm, bcclStream_t stream) {
  return guardedCall("bcclBarrier", comm, [&] {
    return collective(
        comm, bcclUint8, 0,
        [] { return makeArgs(CollKind::kBarrier, nullptr, nullptr, 0, bcclUint8); }, stream, false,
        0, 0);
  });
}

bcclResult_t bcclGroupStart(void) {
  return guardedCall("bcclGroupStart", nullptr, [&] {
    ++tlsGroupDepth;
    return Status::ok();
  });
}

bcclResult_t bcclGroupEnd(void) {
  return guardedCall("bcclGroupEnd", nullptr, [&] {
    if (tlsGroupDepth == 0) return invalidUsage("bcclGroupEnd without bcclGroupStart");
    if (--tlsGroupDepth > 0) return Status::ok();
    std::vector<PendingOp> ops;
    ops.swap(tlsGroupOps);
    return launchOps(ops);
  });
}

}  // extern "C"
