#include "core/rendezvous.h"

#include <poll.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/logging.h"
#include "core/params.h"

namespace bccl {
namespace {

const IntParam kRendezvousTimeoutMs("BCCL_RENDEZVOUS_TIMEOUT_MS", 300000,
                                    "How long a rendezvous listener waits for all ranks");
const StringParam kHostId("BCCL_HOST_ID", "",
                          "Overrides this process's host identity (feign several hosts on one)");

struct ReplyHeader {
  int32_t code;  // bcclResult_t
  uint32_t bytes;
};

struct Joiner {
  int fd = -1;
  Hello hello;
  PeerInfo info;
};

void sendReply(int fd, bcclResult_t code, const void* data, uint32_t bytes) {
  ReplyHeader h{code, bytes};
  Deadline d = Deadline::afterMs(5000);
  if (sendAll(fd, &h, sizeof(h), d, nullptr).isOk() && bytes > 0)
    sendAll(fd, data, bytes, d, nullptr);
}

void failAll(std::vector<Joiner>& joiners, const std::string& message) {
  BCCL_WARN("rendezvous failed: %s", message.c_str());
  for (Joiner& j : joiners) {
    if (j.fd < 0) continue;
    sendReply(j.fd, bcclRemoteError, message.data(), static_cast<uint32_t>(message.size()));
    closeFd(&j.fd);
  }
}

// Reads one joiner's hello and info; returns false (and closes) for strangers.
bool admit(int fd, const uint8_t* secret, Joiner* out) {
  Deadline d = Deadline::afterMs(5000);
  Hello h;
  if (!recvAll(fd, &h, sizeof(h), d, nullptr).isOk() || h.magic != kHelloMagic ||
      h.kind != ConnKind::kRendezvous || !secretMatches(h, secret) ||
      h.payloadBytes != sizeof(PeerInfo)) {
    BCCL_WARN("rendezvous: dropped a connection that did not present the communicator's secret");
    close(fd);
    return false;
  }
  if (!recvAll(fd, &out->info, sizeof(PeerInfo), d, nullptr).isOk()) {
    close(fd);
    return false;
  }
  out->fd = fd;
  out->hello = h;
  return true;
}

void serve(int listenFd, std::vector<uint8_t> secret) {
  Deadline deadline = Deadline::afterMs(kRendezvousTimeoutMs.get());
  std::vector<Joiner> joiners;  // indexed by rank once nranks is known
  int nranks = -1, joined = 0;
  while (nranks < 0 || joined < nranks) {
    if (deadline.expired()) {
      std::string missing;
      for (int r = 0; r < nranks; ++r)
        if (joiners[r].fd < 0) missing += (missing.empty() ? "" : ",") + std::to_string(r);
      failAll(joiners, "timed out waiting for ranks [" + missing + "] to join");
      break;
    }
    std::vector<pollfd> fds{{listenFd, POLLIN, 0}};
    for (const Joiner& j : joiners)
      if (j.fd >= 0) fds.push_back({j.fd, POLLIN, 0});
    int rc = poll(fds.data(), fds.size(), deadline.remainingMs(100));
    if (rc <= 0) continue;
    // A joined rank's socket becomes readable only if it closed: it died during init.
    for (size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      for (Joiner& j : joiners)
        if (j.fd == fds[i].fd) {
          closeFd(&j.fd);
          failAll(joiners, "rank " + std::to_string(j.hello.rank) + " (pid " +
                               std::to_string(j.info.pid) + ") disconnected during initialization");
          close(listenFd);
          return;
        }
    }
    if ((fds[0].revents & POLLIN) == 0) continue;
    StatusOr<int> fd = acceptTcp(listenFd, Deadline::afterMs(100), nullptr);
    if (!fd.isOk()) continue;
    Joiner j;
    if (!admit(fd.value(), secret.data(), &j)) continue;
    std::string refusal;
    if (nranks < 0 && j.hello.nranks >= 1) {
      nranks = j.hello.nranks;
      joiners.resize(nranks);
    }
    if (j.hello.nranks != nranks)
      refusal = "rank " + std::to_string(j.hello.rank) +
                " says nranks=" + std::to_string(j.hello.nranks) + " but others said " +
                std::to_string(nranks);
    else if (j.hello.rank < 0 || j.hello.rank >= nranks)
      refusal = "rank " + std::to_string(j.hello.rank) + " out of range";
    else if (joiners[j.hello.rank].fd >= 0)
      refusal = "two processes claim rank " + std::to_string(j.hello.rank);
    if (!refusal.empty()) {
      sendReply(j.fd, bcclInvalidUsage, refusal.data(), static_cast<uint32_t>(refusal.size()));
      closeFd(&j.fd);
      continue;
    }
    joiners[j.hello.rank] = j;
    ++joined;
  }
  if (nranks > 0 && joined == nranks) {
    std::vector<PeerInfo> all(nranks);
    for (int r = 0; r < nranks; ++r) all[r] = joiners[r].info;
    for (Joiner& j : joiners) {
      sendReply(j.fd, bcclSuccess, all.data(),
                static_cast<uint32_t>(all.size() * sizeof(PeerInfo)));
      closeFd(&j.fd);
    }
  }
  close(listenFd);
}

Status startServerOn(const SockAddr& addr, const uint8_t* secret, SockAddr* bound) {
  StatusOr<int> fd = listenTcp(addr, bound);
  if (!fd.isOk()) return fd.status().withContext("rendezvous listener");
  std::vector<uint8_t> key(secret, secret + kSecretBytes);
  // Detached: it serves one init and exits by itself (or at its deadline), so nothing has to
  // remember to stop it.
  std::thread(serve, fd.value(), std::move(key)).detach();
  return Status::ok();
}

}  // namespace

bool secretMatches(const Hello& hello, const uint8_t* secret) {
  // Constant-time comparison: do not leak how many leading bytes were right.
  uint8_t diff = 0;
  for (int i = 0; i < kSecretBytes; ++i) diff |= hello.secret[i] ^ secret[i];
  return diff == 0;
}

Status startRendezvousServer(bcclUniqueId* id) {
  StatusOr<SockAddr> addr = defaultBootstrapAddress();
  if (!addr.isOk()) return addr.status();
  UniqueIdData data;
  BCCL_RETURN_IF_ERROR(randomSecret(data.secret));
  BCCL_RETURN_IF_ERROR(startServerOn(addr.value(), data.secret, &data.rendezvous));
  encodeUniqueId(data, id);
  BCCL_INFO("rendezvous listening on %s", data.rendezvous.toString().c_str());
  return Status::ok();
}

Status startRendezvousServerAt(const SockAddr& addr, const uint8_t* secret) {
  SockAddr bound;
  return startServerOn(addr, secret, &bound);
}

StatusOr<std::vector<PeerInfo>> rendezvousJoin(const UniqueIdData& id, int rank, int nranks,
                                               const PeerInfo& mine, Deadline deadline,
                                               const AbortFlag* abort) {
  StatusOr<int> fd = connectTcp(id.rendezvous, deadline, abort);
  if (!fd.isOk()) return fd.status().withContext("rendezvous");
  Hello h;
  h.magic = kHelloMagic;
  h.kind = ConnKind::kRendezvous;
  memcpy(h.secret, id.secret, kSecretBytes);
  h.rank = rank;
  h.nranks = nranks;
  h.payloadBytes = sizeof(PeerInfo);
  Status st = sendAll(fd.value(), &h, sizeof(h), deadline, abort);
  if (st.isOk()) st = sendAll(fd.value(), &mine, sizeof(mine), deadline, abort);
  ReplyHeader reply{};
  if (st.isOk()) st = recvAll(fd.value(), &reply, sizeof(reply), deadline, abort);
  std::vector<char> payload;
  if (st.isOk() && reply.bytes <= (64u << 20)) {
    payload.resize(reply.bytes);
    st = recvAll(fd.value(), payload.data(), payload.size(), deadline, abort);
  }
  close(fd.value());
  if (!st.isOk())
    return st.withContext("rendezvous with " + id.rendezvous.toString() + " (rank " +
                          std::to_string(rank) + " of " + std::to_string(nranks) + ")");
  if (reply.code != bcclSuccess)
    return Status(static_cast<bcclResult_t>(reply.code),
                  "rendezvous refused: " + std::string(payload.begin(), payload.end()));
  if (payload.size() != static_cast<size_t>(nranks) * sizeof(PeerInfo))
    return internalError("rendezvous reply has the wrong size");
  std::vector<PeerInfo> all(nranks);
  memcpy(static_cast<void*>(all.data()), payload.data(), payload.size());
  return all;
}

StatusOr<SockAddr> routeSourceAddress(const SockAddr& target) {
  // A UDP "connect" makes the kernel pick the route and source address without any traffic.
  int fd = socket(target.family(), SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoStatus("socket", errno);
  SockAddr t = target;
  if (t.port() == 0) t.setPort(9);
  if (connect(fd, t.raw(), t.len) != 0) {
    Status st = errnoStatus("route to " + target.toString(), errno);
    close(fd);
    return st;
  }
  SockAddr local = localAddressOf(fd);
  close(fd);
  local.setPort(0);
  return local;
}

void fillLocalIdentity(PeerInfo* info) {
  info->pid = static_cast<int32_t>(getpid());
  gethostname(info->hostName, sizeof(info->hostName) - 1);
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string bootId;
  std::getline(boot, bootId);
  std::string machine = std::string(info->hostName) + "/" + bootId;
  info->machineHash = digest64(machine.data(), machine.size());
  info->hostHash = info->machineHash;
  if (kHostId.isSet()) {
    std::string feigned = "hostid:" + kHostId.get();
    info->hostHash = digest64(feigned.data(), feigned.size());
    snprintf(info->hostName, sizeof(info->hostName), "%s", kHostId.get().c_str());
  }
  // Field 22 of /proc/self/stat is the start time in clock ticks; the command name (field 2)
  // may contain spaces, so count fields after its closing parenthesis.
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  size_t close = line.rfind(')');
  if (close != std::string::npos) {
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 22 && rest >> field; ++i)
      if (i == 22) info->procStartTime = strtoull(field.c_str(), nullptr, 10);
  }
}

}  // namespace bccl
