#include "transport/shm/shm_segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace bccl {

ShmSegment::~ShmSegment() {
  unlink();
  if (fd_ >= 0) close(fd_);
  if (data_ != nullptr) munmap(data_, bytes_);
}

Status ShmSegment::create(const std::string& name) {
  fd_ = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd_ < 0) return errnoStatus("shm_open(create " + name + ")", errno);
  name_ = name;
  owner_ = true;
  return Status::ok();
}

Status ShmSegment::allocate(size_t bytes) {
  if (ftruncate(fd_, static_cast<off_t>(bytes)) != 0)
    return errnoStatus("sizing shared memory " + name_ + " to " + std::to_string(bytes) +
                           " bytes (is /dev/shm large enough?)",
                       errno);
  BCCL_RETURN_IF_ERROR(map(fd_, bytes));
  close(fd_);
  fd_ = -1;
  return Status::ok();
}

Status ShmSegment::map(int fd, size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return errnoStatus("mmap " + name_, errno);
  data_ = static_cast<char*>(p);
  bytes_ = bytes;
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
