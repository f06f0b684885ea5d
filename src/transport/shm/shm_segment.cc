#include "transport/shm/shm_segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <mutex>

namespace bccl {
namespace {

// Segments mapped by this process, by name. Ranks that are threads of one process share one
// mapping of each segment instead of mapping it twice: cheaper, and it lets ThreadSanitizer see
// the atomics that order the rings (two mappings would be two unrelated addresses to it).
struct Mapping {
  char* data;
  size_t bytes;
  int refs;
};
std::mutex gMappingsMu;
std::map<std::string, Mapping>& mappings() {
  static auto* m = new std::map<std::string, Mapping>();
  return *m;
}

}  // namespace

ShmSegment::~ShmSegment() {
  unlink();
  if (fd_ >= 0) close(fd_);
  if (data_ == nullptr) return;
  std::lock_guard<std::mutex> lock(gMappingsMu);
  auto it = mappings().find(name_);
  if (it != mappings().end() && it->second.data == data_) {
    if (--it->second.refs > 0) return;
    mappings().erase(it);
  }
  munmap(data_, bytes_);
}

Status ShmSegment::create(const std::string& name) {
  fd_ = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd_ < 0) return errnoStatus("shm_open(create " + name + ")", errno);
  name_ = name;
  owner_ = true;
  return Status::ok();
}

Status ShmSegment::allocate(size_t bytes) {
  // Mapped and registered before it gets its size: a peer in this process that sees the size
  // then finds the mapping registered and shares it (see mappings()).
  BCCL_RETURN_IF_ERROR(map(fd_, bytes));
  if (ftruncate(fd_, static_cast<off_t>(bytes)) != 0)
    return errnoStatus("sizing shared memory " + name_ + " to " + std::to_string(bytes) +
                           " bytes (is /dev/shm large enough?)",
                       errno);
  close(fd_);
  fd_ = -1;
  return Status::ok();
}

Status ShmSegment::map(int fd, size_t bytes) {
  std::lock_guard<std::mutex> lock(gMappingsMu);
  auto it = mappings().find(name_);
  if (it != mappings().end() && it->second.bytes >= bytes) {
    ++it->second.refs;
    data_ = it->second.data;
    bytes_ = it->second.bytes;
    return Status::ok();
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errnoStatus("mmap " + name_, errno);
  data_ = static_cast<char*>(p);
  bytes_ = bytes;
  mappings()[name_] = Mapping{data_, bytes_, 1};
  return Status::ok();
}

Status ShmSegment::open(const std::string& name, size_t bytes, Deadline deadline,
                        const AbortFlag* abort) {
  name_ = name;
  for (;;) {
    int fd = shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
      struct stat st {};
      if (fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) >= bytes) {
        Status s = map(fd, bytes);
        close(fd);
        return s;
      }
      close(fd);
    } else if (errno != ENOENT) {
      return errnoStatus("shm_open(" + name + ")", errno);
    }
    if (abort != nullptr && abort->load()) return remoteError("opening " + name + ": aborted");
    if (deadline.expired())
      return timeoutError("shared memory " + name + " did not appear before the deadline");
    usleep(500);
  }
}

void ShmSegment::unlink() {
  if (owner_ && !name_.empty()) shm_unlink(name_.c_str());
  owner_ = false;
}

}  // namespace bccl
