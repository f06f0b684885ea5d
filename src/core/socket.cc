#include "core/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/params.h"

namespace bccl {
namespace {

const StringParam kSocketIfname("BCCL_SOCKET_IFNAME", "lo",
                                "Interface whose address the bootstrap listener advertises "
                                "(set it to a routable interface for multi-host jobs)");

// Slices of waiting between abort checks.
constexpr int kPollSliceMs = 50;

bool aborted(const AbortFlag* abort) { return abort != nullptr && abort->load(); }

// Waits until fd is ready for `events`, the deadline passes or abort is raised.
Status waitFd(int fd, short events, Deadline deadline, const AbortFlag* abort, const char* what) {
  for (;;) {
    if (aborted(abort)) return remoteError(std::string(what) + ": aborted");
    if (deadline.expired()) return timeoutError(std::string(what) + ": timed out");
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, deadline.remainingMs(kPollSliceMs));
    if (rc > 0) return Status::ok();
    if (rc < 0 && errno != EINTR) return errnoStatus(std::string(what) + ": poll", errno);
  }
}

}  // namespace

Status errnoStatus(const std::string& what, int err) {
  return systemError(what + ": " + strerror(err) + " (errno " + std::to_string(err) + ")");
}

int SockAddr::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  if (family() == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  return 0;
}

void SockAddr::setPort(int port) {
  if (family() == AF_INET)
    reinterpret_cast<sockaddr_in*>(&storage)->sin_port = htons(static_cast<uint16_t>(port));
  else if (family() == AF_INET6)
    reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port = htons(static_cast<uint16_t>(port));
}

std::string SockAddr::toString() const {
  char host[INET6_ADDRSTRLEN] = "?";
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, host,
              sizeof(host));
    return std::string(host) + ":" + std::to_string(port());
  }
  if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr, host,
              sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(port());
  }
  return "<no address>";
}

StatusOr<SockAddr> parseHostPort(const std::string& hostPort) {
  size_t colon = hostPort.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= hostPort.size())
    return invalidArgument("'" + hostPort + "' is not host:port");
  std::string host = hostPort.substr(0, colon);
  std::string port = hostPort.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr)
    return invalidArgument("cannot resolve '" + hostPort + "': " + gai_strerror(rc));
  SockAddr out;
  memcpy(&out.storage, res->ai_addr, res->ai_addrlen);
  out.len = res->ai_addrlen;
  freeaddrinfo(res);
  return out;
}

StatusOr<SockAddr> interfaceAddress(const std::string& ifname) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return errnoStatus("getifaddrs", errno);
  SockAddr v4, v6;
  for (ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_addr == nullptr || ifname != it->ifa_name) continue;
    if (it->ifa_addr->sa_family == AF_INET && v4.len == 0) {
      memcpy(&v4.storage, it->ifa_addr, sizeof(sockaddr_in));
      v4.len = sizeof(sockaddr_in);
    } else if (it->ifa_addr->sa_family == AF_INET6 && v6.len == 0) {
      memcpy(&v6.storage, it->ifa_addr, sizeof(sockaddr_in6));
      v6.len = sizeof(sockaddr_in6);
    }
  }
  freeifaddrs(list);
  SockAddr chosen = v4.len != 0 ? v4 : v6;
  if (chosen.len == 0) return invalidArgument("interface '" + ifname + "' has no IP address");
  chosen.setPort(0);
  return chosen;
}

StatusOr<SockAddr> interfaceOrLiteralAddress(const std::string& name) {
  SockAddr a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (inet_pton(AF_INET, name.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    a.len = sizeof(sockaddr_in);
    return a;
  }
  if (inet_pton(AF_INET6, name.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    a.len = sizeof(sockaddr_in6);
    return a;
  }
  return interfaceAddress(name);
}

std::vector<std::string> socketIfnames() {
  std::vector<std::string> out;
  if (!kSocketIfname.isSet()) return out;
  const std::string names = kSocketIfname.get();
  size_t start = 0;
  while (start <= names.size()) {
    size_t comma = names.find(',', start);
    if (comma == std::string::npos) comma = names.size();
    if (comma > start) out.push_back(names.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

StatusOr<SockAddr> defaultBootstrapAddress() {
  // BCCL_SOCKET_IFNAME may list several interfaces (one per path); the bootstrap uses the first.
  std::string names = kSocketIfname.get();
  return interfaceOrLiteralAddress(names.substr(0, names.find(',')));
}

StatusOr<int> listenTcp(const SockAddr& addr, SockAddr* bound) {
  int fd = socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errnoStatus("socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, addr.raw(), addr.len) != 0) {
    Status st = errnoStatus("bind " + addr.toString(), errno);
    close(fd);
    return st;
  }
  if (listen(fd, SOMAXCONN) != 0) {
    Status st = errnoStatus("listen", errno);
    close(fd);
    return st;
  }
  if (bound != nullptr) *bound = localAddressOf(fd);
  return fd;
}

StatusOr<int> connectTcpOnce(const SockAddr& addr, Deadline deadline, const AbortFlag* abort,
                             const SockAddr* local, int* retriableErrno) {
  *retriableErrno = 0;
  int fd = socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errnoStatus("socket", errno);
  if (local != nullptr) {
    SockAddr from = *local;
    from.setPort(0);
    if (bind(fd, from.raw(), from.len) != 0) {
      Status st = errnoStatus("bind to " + from.toString(), errno);
      close(fd);
      return st;
    }
  }
  int rc = connect(fd, addr.raw(), addr.len);
  int err = rc == 0 ? 0 : errno;
  if (err == EINPROGRESS) {
    Status st = waitFd(fd, POLLOUT, deadline, abort, ("connect to " + addr.toString()).c_str());
    if (!st.isOk()) {
      close(fd);
      return st;
    }
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  }
  if (err == 0) {
    BCCL_RETURN_IF_ERROR(setNonBlocking(fd, false));
    setNoDelay(fd);
    return fd;
  }
  close(fd);
  const bool retriable = err == ECONNREFUSED || err == ETIMEDOUT || err == ECONNRESET ||
                         err == EAGAIN || err == EHOSTUNREACH || err == ENETUNREACH;
  if (retriable) *retriableErrno = err;
  return errnoStatus("connect to " + addr.toString(), err);
}

StatusOr<int> connectTcp(const SockAddr& addr, Deadline deadline, const AbortFlag* abort,
                         const SockAddr* local) {
  int backoffMs = 1;
  for (;;) {
    int err = 0;
    StatusOr<int> fd = connectTcpOnce(addr, deadline, abort, local, &err);
    if (fd.isOk() || err == 0) return fd;
    // The peer's listener may not exist yet (it is starting up): retry until the deadline.
    if (aborted(abort)) return remoteError("connect to " + addr.toString() + ": aborted");
    if (deadline.expired())
      return timeoutError("connect to " + addr.toString() + ": nobody accepted before the " +
                          "deadline (" + strerror(err) + ")");
    usleep(static_cast<useconds_t>(std::min(backoffMs, deadline.remainingMs(100))) * 1000);
    backoffMs = std::min(backoffMs * 2, 100);
  }
}

StatusOr<int> acceptTcp(int listenFd, Deadline deadline, const AbortFlag* abort) {
  for (;;) {
    BCCL_RETURN_IF_ERROR(waitFd(listenFd, POLLIN, deadline, abort, "accept"));
    int fd = accept4(listenFd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      setNoDelay(fd);
      return fd;
    }
    if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
      return errnoStatus("accept", errno);
  }
}

Status sendAll(int fd, const void* data, size_t bytes, Deadline deadline, const AbortFlag* abort) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = send(fd, p, bytes, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      bytes -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      BCCL_RETURN_IF_ERROR(waitFd(fd, POLLOUT, deadline, abort, "send"));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return errnoStatus("send", errno);
  }
  return Status::ok();
}

Status recvAll(int fd, void* data, size_t bytes, Deadline deadline, const AbortFlag* abort) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    ssize_t n = recv(fd, p, bytes, MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      bytes -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return remoteError("connection closed by the other side");
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BCCL_RETURN_IF_ERROR(waitFd(fd, POLLIN, deadline, abort, "recv"));
      continue;
    }
    if (errno == EINTR) continue;
    return errnoStatus("recv", errno);
  }
  return Status::ok();
}

Status setNonBlocking(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0) return errnoStatus("fcntl", errno);
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (fcntl(fd, F_SETFL, flags) != 0) return errnoStatus("fcntl", errno);
  return Status::ok();
}

void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void setBufferSizes(int fd, int bytes) {
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

SockAddr localAddressOf(int fd) {
  SockAddr a;
  a.len = sizeof(a.storage);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a.storage), &a.len) != 0) a.len = 0;
  return a;
}

void closeFd(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

}  // namespace bccl
