#include "transport/tcp/path_config.h"

#include <sys/socket.h>

#include <atomic>

#include "core/logging.h"
#include "core/params.h"

namespace bccl {
namespace {

const IntParam kNumPaths("BCCL_NUM_PATHS", 0,
                         "TCP paths (sockets) per peer; 0: one per usable BCCL_SOCKET_IFNAME "
                         "entry, else 1. More paths than entries reuse them (several sockets "
                         "per interface)");
const IntParam kPathChunkBytes("BCCL_PATH_CHUNK_BYTES", 256 * 1024,
                               "Large messages are cut into chunks of this size, spread over "
                               "the paths by their measured rates (multiple of 64)");
const IntParam kPathTimeoutMs("BCCL_PATH_TIMEOUT_MS", 1000,
                              "A path with data unacknowledged this long, while another path to "
                              "the same peer answers, is declared failed and its data resent");
const IntParam kPathMaxWindow("BCCL_PATH_MAX_WINDOW_BYTES", 32 << 20,
                              "Most unacknowledged bytes per path (the window follows the "
                              "measured rate times the round trip, up to this)");
const IntParam kPathRateTauMs("BCCL_PATH_RATE_TAU_MS", 100,
                              "Time constant of each path's delivery-rate estimate");
const IntParam kSocketBufferBytes("BCCL_SOCKET_BUFFER_BYTES", 0,
                                  "SO_SNDBUF/SO_RCVBUF of TCP data sockets; 0 leaves them to the "
                                  "kernel's autotuning (set it to at least the bandwidth-delay "
                                  "product when the kernel's limits are lower)");

// Below this a chunk costs more in headers and system calls than it gains in balance.
constexpr int64_t kMinChunkBytes = 4096;

}  // namespace

StatusOr<std::vector<SockAddr>> localPathAddresses(const SockAddr& routeSource) {
  std::vector<SockAddr> usable;
  for (const std::string& name : socketIfnames()) {
    StatusOr<SockAddr> a = interfaceOrLiteralAddress(name);
    if (!a.isOk()) {
      BCCL_WARN("BCCL_SOCKET_IFNAME entry '%s' is not usable: %s", name.c_str(),
                a.status().message().c_str());
      continue;
    }
    if (a.value().family() != routeSource.family()) {
      BCCL_WARN("BCCL_SOCKET_IFNAME entry '%s' (%s) is not of the rendezvous's address family",
                name.c_str(), a.value().toString().c_str());
      continue;
    }
    usable.push_back(a.value());
  }
  int64_t n = kNumPaths.get();
  if (n < 0 || n > kMaxPaths)
    return invalidArgument("BCCL_NUM_PATHS must be 0 (automatic) to " + std::to_string(kMaxPaths));
  if (n == 0) n = std::max<int64_t>(1, static_cast<int64_t>(usable.size()));
  if (n == 1) return std::vector<SockAddr>{routeSource};
  if (usable.empty()) usable.push_back(routeSource);
  std::vector<SockAddr> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(usable[static_cast<size_t>(i) % usable.size()]);
  return out;
}

StatusOr<MultipathOptions> multipathOptions() {
  MultipathOptions o;
  const int64_t chunk = kPathChunkBytes.get();
  if (chunk < kMinChunkBytes || chunk % 64 != 0 || chunk > (1 << 30))
    return invalidArgument("BCCL_PATH_CHUNK_BYTES must be a multiple of 64 from " +
                           std::to_string(kMinChunkBytes) + " to 1 GiB");
  const int64_t timeout = kPathTimeoutMs.get();
  if (timeout < 10) return invalidArgument("BCCL_PATH_TIMEOUT_MS must be at least 10");
  const int64_t window = kPathMaxWindow.get();
  if (window < 4 * chunk)
    return invalidArgument("BCCL_PATH_MAX_WINDOW_BYTES must be at least 4 chunks");
  const int64_t tau = kPathRateTauMs.get();
  if (tau < 1) return invalidArgument("BCCL_PATH_RATE_TAU_MS must be positive");
  o.chunkBytes = static_cast<uint64_t>(chunk);
  o.stallMs = static_cast<int>(timeout);
  o.maxWindow = static_cast<uint64_t>(window);
  o.minWindow = std::min<uint64_t>(o.maxWindow, 4 * o.chunkBytes);
  o.rateTauNs = tau * 1000000;
  return o;
}

void applySocketBuffers(int fd) {
  const int64_t bytes = kSocketBufferBytes.get();
  if (bytes <= 0) return;
  const int want = static_cast<int>(std::min<int64_t>(bytes, 1 << 30));
  setBufferSizes(fd, want);
  int got = 0;
  socklen_t len = sizeof(got);
  // The kernel doubles the value it grants and caps it at net.core.[rw]mem_max.
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len) == 0 && got / 2 < want) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) {
      BCCL_WARN(
          "BCCL_SOCKET_BUFFER_BYTES=%d: the kernel granted only %d (raise "
          "net.core.wmem_max/rmem_max)",
          want, got / 2);
    }
  }
}

}  // namespace bccl
