/*
 * bccl: a collective communication library for host memory.
 *
 * This header is the whole public ABI. It is C99, NCCL-shaped (a framework that binds NCCL
 * binds bccl with a rename), and every handle is opaque so the inside can change freely.
 * No call raises an exception or aborts the process: every failure is a result code, and
 * bcclGetLastError() says what went wrong in words.
 */
#ifndef BCCL_BCCL_H_
#define BCCL_BCCL_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
/* The library hides every symbol but these. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define BCCL_MAJOR 0
#define BCCL_MINOR 1
#define BCCL_PATCH 0
#define BCCL_VERSION(X, Y, Z) ((X)*10000 + (Y)*100 + (Z))
#define BCCL_VERSION_CODE BCCL_VERSION(BCCL_MAJOR, BCCL_MINOR, BCCL_PATCH)

typedef struct bcclComm* bcclComm_t;
/* A host stream: operations enqueued on it run in order on a background thread.
 * A NULL stream means the call blocks until the operation is complete. */
typedef struct bcclStream* bcclStream_t;

#define BCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[BCCL_UNIQUE_ID_BYTES];
} bcclUniqueId;

typedef enum {
  bcclSuccess = 0,
  bcclUnhandledError = 1,
  bcclSystemError = 2,
  bcclInternalError = 3,
  bcclInvalidArgument = 4,
  bcclInvalidUsage = 5,
  bcclRemoteError = 6,
  bcclInProgress = 7,
  bcclTimeout = 8,
  bcclNumResults = 9
} bcclResult_t;

typedef enum {
  bcclInt8 = 0,
  bcclChar = 0,
  bcclUint8 = 1,
  bcclInt32 = 2,
  bcclInt = 2,
  bcclUint32 = 3,
  bcclInt64 = 4,
  bcclUint64 = 5,
  bcclFloat16 = 6,
  bcclHalf = 6,
  bcclFloat32 = 7,
  bcclFloat = 7,
  bcclFloat64 = 8,
  bcclDouble = 8,
  bcclBfloat16 = 9,
  bcclNumTypes = 10
} bcclDataType_t;

typedef enum {
  bcclSum = 0,
  bcclProd = 1,
  bcclMax = 2,
  bcclMin = 3,
  bcclAvg = 4,
  bcclNumOps = 5
} bcclRedOp_t;

/* Communicator configuration. Always start from BCCL_CONFIG_INITIALIZER so that `size`,
 * `magic` and `version` let a newer library read a struct from an older caller. Fields left
 * at BCCL_CONFIG_UNDEF_INT / NULL take their value from the environment or the default. */
#define BCCL_CONFIG_MAGIC 0xBCC1C0F1u
#define BCCL_CONFIG_UNDEF_INT (-2147483647 - 1)
typedef struct {
  size_t size;
  unsigned magic;
  unsigned version;
  int timeoutMs;          /* every wait's deadline; BCCL_TIMEOUT_MS, default 300000 */
  const char* transports; /* comma list of allowed transports: "shm,tcp" (default), "tcp" */
} bcclConfig_t;

#define BCCL_CONFIG_INITIALIZER \
  { sizeof(bcclConfig_t), BCCL_CONFIG_MAGIC, BCCL_VERSION_CODE, BCCL_CONFIG_UNDEF_INT, NULL }

bcclResult_t bcclGetVersion(int* version);

/* Starts a rendezvous listener in this process (it serves one communicator's init, then
 * exits) and returns an id naming it. Pass the id to every rank, by any means. */
bcclResult_t bcclGetUniqueId(bcclUniqueId* uniqueId);
/* A printable form of the id (for environment variables); `len` must be at least
 * BCCL_UNIQUE_ID_STRING_BYTES. */
#define BCCL_UNIQUE_ID_STRING_BYTES 160
bcclResult_t bcclUniqueIdToString(const bcclUniqueId* id, char* buf, size_t len);
bcclResult_t bcclUniqueIdFromString(const char* str, bcclUniqueId* id);

bcclResult_t bcclCommInitRank(bcclComm_t* comm, int nranks, bcclUniqueId commId, int rank);
bcclResult_t bcclCommInitRankConfig(bcclComm_t* comm, int nranks, bcclUniqueId commId, int rank,
                                    bcclConfig_t* config);
/* Reads BCCL_RANK / BCCL_NRANKS / BCCL_UNIQUE_ID (set by bcclrun); failing those, torchrun's
 * RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT, Open MPI's OMPI_COMM_WORLD_RANK / _SIZE or
 * Slurm's SLURM_PROCID / SLURM_NTASKS with BCCL_COMM_ID=host:port (rank 0 listens there). */
bcclResult_t bcclCommInitFromEnv(bcclComm_t* comm, bcclConfig_t* config);
bcclResult_t bcclCommDestroy(bcclComm_t comm);
/* Stops every operation on the communicator, on any thread, and frees it. Never blocks on
 * a peer. */
bcclResult_t bcclCommAbort(bcclComm_t comm);
bcclResult_t bcclCommCount(const bcclComm_t comm, int* count);
bcclResult_t bcclCommUserRank(const bcclComm_t comm, int* rank);
/* The communicator's sticky error: the first failure any operation or background thread saw. */
bcclResult_t bcclCommGetAsyncError(bcclComm_t comm, bcclResult_t* asyncError);
/* How this rank reaches `peer`, in words, for logs and benchmark headers (the format may
 * change): "self", "shm", "tcp", "ucx", or e.g. "verbs rxe0:1 gid[1] ::ffff:10.77.0.1
 * (RoCE v2) mtu 1024, 1 QP(s)". Truncated to `len` bytes, always NUL-terminated. */
bcclResult_t bcclCommGetPeerTransport(const bcclComm_t comm, int peer, char* buf, size_t len);

/* ---- Failures: detection, isolation, recovery --------------------------------------------
 * A rank that dies or stops responding is noticed by every survivor within milliseconds (see
 * BCCL_HEARTBEAT_MS); from then on every pending and future operation on the communicator
 * returns bcclRemoteError naming it. The survivors then build a new communicator without it. */

/* The ranks this rank knows to have failed (sorted); *count is their number, of which at most
 * maxRanks are written. */
bcclResult_t bcclCommGetFailedRanks(bcclComm_t comm, int* ranks, int maxRanks, int* count);
/* Stops the communicator on every rank, as a failure would: their operations return
 * bcclRemoteError. For a rank that decides, on its own, that the communicator is unusable. */
bcclResult_t bcclCommRevoke(bcclComm_t comm);

#define BCCL_SHRINK_DEFAULT 0
#define BCCL_SHRINK_ABORT 1 /* first fail every pending operation on comm (it has failed ranks) */
/* Collective over the survivors: a new communicator of every rank not in excludeRanks and not
 * known to have failed, ranks renumbered densely in the old order. An empty list means "the
 * failed ranks we know of". Needs no particular rank (rank 0 may be gone). config may be NULL:
 * the new communicator then takes comm's settings. */
bcclResult_t bcclCommShrink(bcclComm_t comm, const int* excludeRanks, int excludeCount,
                            bcclComm_t* newcomm, bcclConfig_t* config, int flags);
/* Collective over the survivors: *flag becomes the AND of every survivor's *flag, and the
 * survivors agree on the failed set (bcclCommGetFailedRanks reports it afterwards). */
bcclResult_t bcclCommAgree(bcclComm_t comm, int* flag);

#define BCCL_SPLIT_NOCOLOR (-1)
/* Collective: ranks with the same color form a new communicator, ordered by key then old rank;
 * color BCCL_SPLIT_NOCOLOR gives *newcomm = NULL. config may be NULL (comm's settings). */
bcclResult_t bcclCommSplit(bcclComm_t comm, int color, int key, bcclComm_t* newcomm,
                           bcclConfig_t* config);

const char* bcclGetErrorString(bcclResult_t result);
/* The message of the last failure on `comm`, or of this thread's last failed call when comm
 * is NULL. Never NULL; "" when there was none. */
const char* bcclGetLastError(bcclComm_t comm);

bcclResult_t bcclStreamCreate(bcclStream_t* stream);
bcclResult_t bcclStreamDestroy(bcclStream_t stream);
/* Waits for every operation enqueued so far; returns the first error among them. */
bcclResult_t bcclStreamSynchronize(bcclStream_t stream);
/* bcclSuccess when idle, bcclInProgress while operations are pending. */
bcclResult_t bcclStreamQuery(bcclStream_t stream);

bcclResult_t bcclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           bcclDataType_t datatype, bcclRedOp_t op, bcclComm_t comm,
                           bcclStream_t stream);
bcclResult_t bcclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                           bcclDataType_t datatype, bcclComm_t comm, bcclStream_t stream);
bcclResult_t bcclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                               bcclDataType_t datatype, bcclRedOp_t op, bcclComm_t comm,
                               bcclStream_t stream);
bcclResult_t bcclBroadcast(const void* sendbuff, void* recvbuff, size_t count,
                           bcclDataType_t datatype, int root, bcclComm_t comm, bcclStream_t stream);
bcclResult_t bcclReduce(const void* sendbuff, void* recvbuff, size_t count, bcclDataType_t datatype,
                        bcclRedOp_t op, int root, bcclComm_t comm, bcclStream_t stream);
/* `count` elements to and from each rank. */
bcclResult_t bcclAllToAll(const void* sendbuff, void* recvbuff, size_t count,
                          bcclDataType_t datatype, bcclComm_t comm, bcclStream_t stream);
bcclResult_t bcclSend(const void* sendbuff, size_t count, bcclDataType_t datatype, int peer,
                      bcclComm_t comm, bcclStream_t stream);
bcclResult_t bcclRecv(void* recvbuff, size_t count, bcclDataType_t datatype, int peer,
                      bcclComm_t comm, bcclStream_t stream);
bcclResult_t bcclBarrier(bcclComm_t comm, bcclStream_t stream);

/* Operations issued between these on one thread are launched together at bcclGroupEnd, so
 * matching send/recv pairs cannot deadlock. Groups nest; the outermost end launches. */
bcclResult_t bcclGroupStart(void);
bcclResult_t bcclGroupEnd(void);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BCCL_BCCL_H_ */
