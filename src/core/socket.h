// Thin, deadline-aware helpers over BSD sockets, shared by the bootstrap and the TCP transport.
// Every blocking helper waits in poll() slices so that an abort flag is noticed promptly.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <string>
#include <vector>

#include "core/deadline.h"
#include "core/status.h"

namespace bccl {

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = 0;

  int family() const { return storage.ss_family; }
  int port() const;
  void setPort(int port);
  std::string toString() const;  // "1.2.3.4:5678" or "[::1]:5678"
  const sockaddr* raw() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

// Parses "host:port" (IPv4 literal, [IPv6] literal or a resolvable name).
StatusOr<SockAddr> parseHostPort(const std::string& hostPort);
// The first IPv4 (else IPv6) address of interface `ifname`, port 0.
StatusOr<SockAddr> interfaceAddress(const std::string& ifname);
// `name` as an IP literal ("10.0.0.1", "::1") or else as an interface name; port 0.
StatusOr<SockAddr> interfaceOrLiteralAddress(const std::string& name);
// The entries of BCCL_SOCKET_IFNAME (comma-separated); empty when it is not set.
std::vector<std::string> socketIfnames();
// The address a process should advertise for bootstrap: BCCL_SOCKET_IFNAME's, else loopback.
StatusOr<SockAddr> defaultBootstrapAddress();

// A listening TCP socket on `addr` (port 0 picks one); `bound` receives the actual address.
StatusOr<int> listenTcp(const SockAddr& addr, SockAddr* bound);
// Connects, retrying while the peer is not listening yet, until the deadline; from `local` (its
// address, any port) when given, so that the connection leaves through that interface.
StatusOr<int> connectTcp(const SockAddr& addr, Deadline deadline, const AbortFlag* abort,
                         const SockAddr* local = nullptr);
// One attempt; when it fails in a way connectTcp would retry (refused, reset, unreachable),
// `retriableErrno` receives the errno, else 0. For callers that know the listener must exist.
StatusOr<int> connectTcpOnce(const SockAddr& addr, Deadline deadline, const AbortFlag* abort,
                             const SockAddr* local, int* retriableErrno);
StatusOr<int> acceptTcp(int listenFd, Deadline deadline, const AbortFlag* abort);

Status sendAll(int fd, const void* data, size_t bytes, Deadline deadline, const AbortFlag* abort);
Status recvAll(int fd, void* data, size_t bytes, Deadline deadline, const AbortFlag* abort);

Status setNonBlocking(int fd, bool on);
void setNoDelay(int fd);
void setBufferSizes(int fd, int bytes);
SockAddr localAddressOf(int fd);
void closeFd(int* fd);

}  // namespace bccl
