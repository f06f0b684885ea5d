#include "transport/tcp/tcp_delivery.h"

// linux/tcp.h, not netinet/tcp.h: glibc's tcp_info stops before the fields used here.
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstddef>

namespace bccl {

bool readTcpDelivery(int fd, TcpDelivery* out) {
  tcp_info info{};
  socklen_t len = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return false;
  if (len < offsetof(tcp_info, tcpi_min_rtt) + sizeof(info.tcpi_min_rtt)) return false;
  int queued = 0;
  if (ioctl(fd, SIOCOUTQ, &queued) != 0) return false;
  out->bytesAcked = info.tcpi_bytes_acked;
  out->unacked = queued > 0 ? static_cast<uint64_t>(queued) : 0;
  out->minRttNs = static_cast<int64_t>(info.tcpi_min_rtt) * 1000;
  return true;
}

}  // namespace bccl
