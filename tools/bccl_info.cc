// bccl_info: what this build and this machine offer, and what bccl would do here. Prints the
// version, the transports built and usable, the topology found, every BCCL_* parameter with its
// value and help, and, when run as a rank under a launcher (bcclrun, torchrun, mpirun), the
// communicator's view: peers, transports per peer and the algorithm table it would choose.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "api/handles.h"
#include "bccl/bccl.h"
#include "core/params.h"
#include "topology/topology.h"
#ifdef BCCL_HAVE_VERBS
#include "transport/verbs/verbs_device.h"
#endif

namespace {

bool shmUsable() { return access("/dev/shm", W_OK) == 0; }

void printTransports() {
  std::printf("transports:\n");
  std::printf("  shm    built, %s (POSIX shared memory; single-copy via process_vm_readv)\n",
              shmUsable() ? "usable" : "NOT usable: /dev/shm is not writable");
  std::printf("  tcp    built, usable\n");
#ifdef BCCL_HAVE_UCX
  std::printf("  ucx    built\n");
#else
  std::printf("  ucx    not built (libucx-dev was not found at build time)\n");
#endif
#ifdef BCCL_HAVE_VERBS
  // What BCCL_IB_HCA / BCCL_IB_GID_INDEX select, then every device and port found.
  bccl::StatusOr<std::vector<bccl::VerbsPort>> chosen = bccl::openVerbsPorts();
  if (chosen.isOk()) {
    std::string ports;
    for (const bccl::VerbsPort& p : chosen.value())
      ports += (ports.empty() ? "" : " + ") + p.describe();
    std::printf("  verbs  built, usable: %s\n", ports.c_str());
  } else {
    std::printf("  verbs  built, NOT usable: %s\n", chosen.status().message().c_str());
  }
  for (const std::string& d : bccl::describeVerbsDevices()) std::printf("         %s\n", d.c_str());
#else
  std::printf("  verbs  not built (libibverbs-dev was not found at build time)\n");
#endif
}

void printParams() {
  std::printf("parameters:\n");
  bccl::forEachParam([](const bccl::ParamInfo& p, const char* value) {
    std::printf("  %-28s = %-10s (default %s)\n      %s\n", p.name, value != nullptr ? value : "",
                p.defaultValue.c_str(), p.help);
  });
}

bool underLauncher() {
  return std::getenv("BCCL_UNIQUE_ID") != nullptr || std::getenv("BCCL_COMM_ID") != nullptr ||
         (std::getenv("RANK") != nullptr && std::getenv("MASTER_ADDR") != nullptr);
}

int printCommunicator() {
  bcclComm_t comm;
  if (bcclCommInitFromEnv(&comm, nullptr) != bcclSuccess) {
    std::printf("communicator: init failed: %s\n", bcclGetLastError(nullptr));
    return 1;
  }
  bccl::Communicator& c = *comm->impl;
  if (c.rank() == 0) {
    std::printf("communicator: %d ranks\n", c.nranks());
    for (int r = 0; r < c.nranks(); ++r) {
      bccl::Connection* conn = c.connection(r);
      std::printf("  %-40s numa %d  %s\n", c.peerName(r).c_str(), c.peer(r).numaNode,
                  r == 0            ? "(self)"
                  : conn != nullptr ? conn->describe().c_str()
                                    : "?");
    }
  }
  bcclCommDestroy(comm);
  return 0;
}

}  // namespace

int main() {
  int version = 0;
  bcclGetVersion(&version);
  std::printf("bccl %d.%d.%d (version code %d)\n", version / 10000, version / 100 % 100,
              version % 100, version);
  printTransports();
  bccl::StatusOr<bccl::HostTopology> topo = bccl::discoverTopology(0);
  if (topo.isOk()) {
    std::printf("topology (%s):\n%s", topo.value().source.c_str(), topo.value().toJson().c_str());
  } else {
    std::printf("topology: %s\n", topo.status().message().c_str());
  }
  printParams();
  if (underLauncher()) return printCommunicator();
  std::printf(
      "(run under a launcher, e.g. 'bcclrun -n 4 bccl_info', for the communicator's view)\n");
  return 0;
}
