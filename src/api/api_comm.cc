// Communicator lifetime through the C API: unique ids, init (explicit or from a launcher's
// environment), destroy and abort, queries.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "api/api_support.h"
#include "core/params.h"
#include "core/unique_id.h"

using namespace bccl;

namespace {

const StringParam kCommId("BCCL_COMM_ID", "",
                          "host:port of the rendezvous for jobs started by torchrun, mpirun or "
                          "srun (rank 0 listens there)");
const StringParam kCommSecret("BCCL_COMM_SECRET", "",
                              "Shared secret for env-launched jobs (default: derived from the "
                              "job, which keeps strangers' jobs apart but is not secret)");

Status initRank(bcclComm_t* out, int nranks, const bcclUniqueId& commId, int rank,
                const bcclConfig_t* config) {
  if (out == nullptr) return invalidArgument("comm pointer is NULL");
  *out = nullptr;
  if (nranks < 1)
    return invalidArgument("nranks must be at least 1, got " + std::to_string(nranks));
  if (rank < 0 || rank >= nranks)
    return invalidArgument("rank " + std::to_string(rank) + " is out of range [0, " +
                           std::to_string(nranks) + ")");
  StatusOr<CommConfig> cfg = resolveConfig(config);
  if (!cfg.isOk()) return cfg.status();
  StatusOr<UniqueIdData> id = decodeUniqueId(commId);
  if (!id.isOk()) return id.status();
  ScopedLogRank tag(rank);
  StatusOr<std::unique_ptr<Communicator>> comm =
      Communicator::create(nranks, id.value(), rank, cfg.value());
  if (!comm.isOk()) return comm.status();
  auto handle = std::make_unique<bcclComm>();
  handle->impl = std::move(comm.value());
  *out = handle.release();
  return Status::ok();
}

bool readEnvInt(const char* name, int* value) {
  const char* v = getenv(name);
  if (v == nullptr || *v == '\0') return false;
  char* end = nullptr;
  long parsed = strtol(v, &end, 10);
  if (*end != '\0') return false;
  *value = static_cast<int>(parsed);
  return true;
}

// Rank and size from whichever launcher started us.
bool launcherRankAndSize(int* rank, int* size, std::string* launcher) {
  static const char* pairs[][3] = {{"RANK", "WORLD_SIZE", "torchrun"},
                                   {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI"},
                                   {"PMI_RANK", "PMI_SIZE", "MPICH"},
                                   {"SLURM_PROCID", "SLURM_NTASKS", "Slurm"}};
  for (auto& p : pairs)
    if (readEnvInt(p[0], rank) && readEnvInt(p[1], size)) {
      *launcher = p[2];
      return true;
    }
  return false;
}

// The id for an env-launched job: the rendezvous address plus a secret every rank derives alike.
StatusOr<UniqueIdData> idFromLauncher(const std::string& launcher) {
  std::string where = kCommId.get();
  if (where.empty() && launcher == "torchrun" && getenv("MASTER_ADDR") && getenv("MASTER_PORT")) {
    // torchrun's own store holds MASTER_PORT; the next port is ours unless BCCL_COMM_ID says.
    where =
        std::string(getenv("MASTER_ADDR")) + ":" + std::to_string(atoi(getenv("MASTER_PORT")) + 1);
  }
  if (where.empty())
    return invalidArgument("started by " + launcher +
                           " but BCCL_COMM_ID=host:port is not set "
                           "(rank 0 listens there for the rendezvous)");
  StatusOr<SockAddr> addr = parseHostPort(where);
  if (!addr.isOk()) return addr.status();
  UniqueIdData id;
  id.rendezvous = addr.value();
  std::string seed = kCommSecret.get();
  if (seed.empty()) {
    seed = where;
    for (const char* job :
         {"TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "OMPI_MCA_ess_base_jobid", "PMI_ID"})
      if (getenv(job) != nullptr) seed += std::string("/") + getenv(job);
  }
  uint64_t a = digest64(seed.data(), seed.size()), b = digest64(seed.data(), seed.size(), a);
  memcpy(id.secret, &a, 8);
  memcpy(id.secret + 8, &b, 8);
  return id;
}

Status initFromEnv(bcclComm_t* out, bcclConfig_t* config) {
  if (out == nullptr) return invalidArgument("comm pointer is NULL");
  int rank = -1, nranks = -1;
  const char* idText = getenv("BCCL_UNIQUE_ID");
  if (readEnvInt("BCCL_RANK", &rank) && readEnvInt("BCCL_NRANKS", &nranks) && idText != nullptr) {
    StatusOr<bcclUniqueId> id = uniqueIdFromString(idText);
    if (!id.isOk()) return id.status().withContext("BCCL_UNIQUE_ID");
    return initRank(out, nranks, id.value(), rank, config);
  }
  std::string launcher;
  if (!launcherRankAndSize(&rank, &nranks, &launcher))
    return invalidArgument(
        "no launcher environment found: set BCCL_RANK, BCCL_NRANKS and "
        "BCCL_UNIQUE_ID (bcclrun does), or run under torchrun, mpirun or srun "
        "with BCCL_COMM_ID=host:port");
  StatusOr<UniqueIdData> data = idFromLauncher(launcher);
  if (!data.isOk()) return data.status();
  if (rank == 0)
    BCCL_RETURN_IF_ERROR(startRendezvousServerAt(data.value().rendezvous, data.value().secret));
  bcclUniqueId id;
  encodeUniqueId(data.value(), &id);
  return initRank(out, nranks, id, rank, config);
}

// Waits, boundedly, until no call or queued stream work uses the communicator.
bool waitUnused(bcclComm_t comm, int64_t ms) {
  Deadline d = Deadline::afterMs(ms);
  while (comm->users.load() > 0) {
    if (d.expired()) return false;
    usleep(1000);
  }
  return true;
}

}  // namespace

extern "C" {

bcclResult_t bcclGetVersion(int* version) {
  return guardedCall("bcclGetVersion", nullptr, [&] {
    if (version == nullptr) return invalidArgument("version is NULL");
    *version = BCCL_VERSION_CODE;
    return Status::ok();
  });
}

bcclResult_t bcclGetUniqueId(bcclUniqueId* uniqueId) {
  return guardedCall("bcclGetUniqueId", nullptr, [&] {
    if (uniqueId == nullptr) return invalidArgument("uniqueId is NULL");
    return startRendezvousServer(uniqueId);
  });
}

bcclResult_t bcclUniqueIdToString(const bcclUniqueId* id, char* buf, size_t len) {
  return guardedCall("bcclUniqueIdToString", nullptr, [&] {
    if (id == nullptr || buf == nullptr) return invalidArgument("id or buf is NULL");
    StatusOr<UniqueIdData> valid = decodeUniqueId(*id);
    if (!valid.isOk()) return valid.status();
    std::string s = uniqueIdToString(*id);
    // The documented minimum, not just today's length, so callers size buffers by the macro.
    if (len < BCCL_UNIQUE_ID_STRING_BYTES || len < s.size() + 1)
      return invalidArgument("buffer of " + std::to_string(len) + " bytes is too small; need " +
                             std::to_string(BCCL_UNIQUE_ID_STRING_BYTES));
    memcpy(buf, s.c_str(), s.size() + 1);
    return Status::ok();
  });
}

bcclResult_t bcclUniqueIdFromString(const char* str, bcclUniqueId* id) {
  return guardedCall("bcclUniqueIdFromString", nullptr, [&] {
    if (str == nullptr || id == nullptr) return invalidArgument("str or id is NULL");
    StatusOr<bcclUniqueId> parsed = uniqueIdFromString(str);
    if (!parsed.isOk()) return parsed.status();
    *id = parsed.value();
    return Status::ok();
  });
}

bcclResult_t bcclCommInitRank(bcclComm_t* comm, int nranks, bcclUniqueId commId, int rank) {
  return guardedCall("bcclCommInitRank", nullptr,
                     [&] { return initRank(comm, nranks, commId, rank, nullptr); });
}

bcclResult_t bcclCommInitRankConfig(bcclComm_t* comm, int nranks, bcclUniqueId commId, int rank,
                                    bcclConfig_t* config) {
  return guardedCall("bcclCommInitRankConfig", nullptr,
                     [&] { return initRank(comm, nranks, commId, rank, config); });
}

bcclResult_t bcclCommInitFromEnv(bcclComm_t* comm, bcclConfig_t* config) {
  return guardedCall("bcclCommInitFromEnv", nullptr, [&] { return initFromEnv(comm, config); });
}

bcclResult_t bcclCommDestroy(bcclComm_t comm) {
  return guardedCall("bcclCommDestroy", nullptr, [&] {
    if (comm == nullptr) return invalidArgument("comm is NULL");
    // Queued work finishes first (each piece is bounded by the timeout); if it does not, abort.
    if (!waitUnused(comm, comm->impl->timeoutMs() + 5000LL)) {
      comm->impl->abort();
      if (!waitUnused(comm, 10000)) return internalError("communicator still in use; not freed");
    }
    delete comm;
    return Status::ok();
  });
}

bcclResult_t bcclCommAbort(bcclComm_t comm) {
  return guardedCall("bcclCommAbort", nullptr, [&] {
    if (comm == nullptr) return invalidArgument("comm is NULL");
    comm->impl->abort();
    // Waiters notice the abort within one sleep slice; never wait on a peer here.
    if (!waitUnused(comm, 10000)) return internalError("communicator still in use; not freed");
    delete comm;
    return Status::ok();
  });
}

bcclResult_t bcclCommCount(const bcclComm_t comm, int* count) {
  return guardedCall("bcclCommCount", nullptr, [&] {
    if (comm == nullptr || count == nullptr) return invalidArgument("comm or count is NULL");
    *count = comm->impl->nranks();
    return Status::ok();
  });
}

bcclResult_t bcclCommGetPeerTransport(const bcclComm_t comm, int peer, char* buf, size_t len) {
  return guardedCall("bcclCommGetPeerTransport", nullptr, [&] {
    if (comm == nullptr || buf == nullptr || len == 0)
      return invalidArgument("comm or buf is NULL, or len is 0");
    Communicator& c = *comm->impl;
    if (peer < 0 || peer >= c.nranks())
      return invalidArgument("peer " + std::to_string(peer) + " is out of range [0, " +
                             std::to_string(c.nranks()) + ")");
    Connection* conn = c.connection(peer);
    const std::string what = peer == c.rank() ? "self" : conn != nullptr ? conn->describe() : "?";
    snprintf(buf, len, "%s", what.c_str());
    return Status::ok();
  });
}

bcclResult_t bcclCommUserRank(const bcclComm_t comm, int* rank) {
  return guardedCall("bcclCommUserRank", nullptr, [&] {
    if (comm == nullptr || rank == nullptr) return invalidArgument("comm or rank is NULL");
    *rank = comm->impl->rank();
    return Status::ok();
  });
}

bcclResult_t bcclCommGetAsyncError(bcclComm_t comm, bcclResult_t* asyncError) {
  return guardedCall("bcclCommGetAsyncError", nullptr, [&] {
    if (comm == nullptr || asyncError == nullptr)
      return invalidArgument("comm or asyncError is NULL");
    Status health = comm->impl->health();
    *asyncError = health.code();
    return Status::ok();
  });
}

}  // extern "C"
