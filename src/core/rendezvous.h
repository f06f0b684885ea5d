// The one-time rendezvous that turns a unique id into a communicator: each rank sends its
// PeerInfo to the listener started by bcclGetUniqueId and receives everyone's. After this, ranks
// talk to each other directly; the rendezvous listener exits and nothing depends on rank 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/socket.h"
#include "core/unique_id.h"

namespace bccl {

// The most network paths (sockets per peer) a rank offers.
constexpr int kMaxPaths = 8;

// What every rank knows about every other after init. A fixed-layout POD exchanged as bytes:
// all ranks of a job run the same build.
struct PeerInfo {
  int32_t rank = -1;
  int32_t pid = 0;
  uint64_t procStartTime = 0;    // from /proc/self/stat: tells a recycled pid from the original
  uint64_t hostHash = 0;         // equal iff same host (or same BCCL_HOST_ID)
  uint64_t machineHash = 0;      // equal iff same machine, whatever BCCL_HOST_ID says
  uint64_t cmaProbeAddr = 0;     // address of a known constant, to test process_vm_readv
  int32_t shmTag = 0;            // names this rank's shared-memory segment within the comm
  int32_t numaNode = 0;          // where this rank runs (topology)
  int32_t boundCpu = -1;         // the lowest CPU it is bound to, -1 if unbound (placement.h)
  int32_t onlyCpu = -1;          // the one CPU it may run on, -1 if several (placement.h)
  uint64_t llcBytes = 0;         // its host's last-level cache (topology), 0 if unknown
  int32_t cpus = 0;              // its machine's processing units (topology), 0 if unknown
  uint32_t ucxAddressBytes = 0;  // this rank's UCX worker address, when it offers UCX
  char ucxAddress[1024] = {};
  // What this rank offers the verbs transport (see comm_verbs.cc); QPs are set up per pair.
  uint8_t verbsOffer = 0;      // 1: an active RDMA port is open for this communicator
  uint8_t verbsLinkLayer = 0;  // IBV_LINK_LAYER_*: peers on different layers cannot connect
  char hostName[64] = {};
  SockAddr listenAddr;  // where this rank accepts transport and control connections
  // Multipath TCP: the address of each of this rank's paths (listenAddr's port), and the port
  // of its listener for reconnecting failed paths.
  int32_t numPaths = 0;
  int32_t pathPort = 0;
  SockAddr pathAddrs[kMaxPaths];
};

// Why a connection was opened; sent first on every connection of a communicator.
// kVerbsSetup: a short-lived link that carries the verbs QP bring-up, then closes.
enum class ConnKind : uint32_t {
  kRendezvous = 1,
  kControl = 2,
  kData = 3,
  kChild = 4,
  kVerbsSetup = 5
};

struct Hello {
  uint32_t magic = 0;
  ConnKind kind = ConnKind::kRendezvous;
  uint8_t secret[kSecretBytes] = {};
  uint64_t commId = 0;
  int32_t rank = -1;
  int32_t nranks = 0;
  int32_t channel = 0;
  uint32_t payloadBytes = 0;
};
constexpr uint32_t kHelloMagic = 0xBCC1E110u;
bool secretMatches(const Hello& hello, const uint8_t* secret);

// Starts the listener thread for one communicator's rendezvous; fills `id`.
Status startRendezvousServer(bcclUniqueId* id);
// Starts a rendezvous listener on a fixed address (rank 0 of an env-launched job).
Status startRendezvousServerAt(const SockAddr& addr, const uint8_t* secret);

// Sends this rank's info to the rendezvous and returns all ranks' infos, indexed by rank.
// `localAddr` receives the address this process used to reach the rendezvous: the address
// other ranks can most likely reach it at.
StatusOr<std::vector<PeerInfo>> rendezvousJoin(const UniqueIdData& id, int rank, int nranks,
                                               const PeerInfo& mine, Deadline deadline,
                                               const AbortFlag* abort);
// Address this process would use to reach `target` (without sending anything).
StatusOr<SockAddr> routeSourceAddress(const SockAddr& target);

// This process's identity for PeerInfo: host hash and name (BCCL_HOST_ID overrides), start time.
void fillLocalIdentity(PeerInfo* info);

}  // namespace bccl
