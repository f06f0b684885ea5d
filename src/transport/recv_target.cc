// Delivery of received bytes into user memory: a copy or a reduction, shared by every transport.
#include <cstring>

#include "core/bulk_copy.h"
#include "core/reduce.h"
#include "transport/transport.h"

namespace bccl {

void RecvTarget::deliver(size_t offset, const char* data, size_t bytes) const {
  if (bytes == 0) return;
  if (operand == nullptr) {
    copyBulk(dst + offset, data, bytes);
  } else {
    reduceInto(dst + offset, operand + offset, data, bytes / elemSize, dtype, op);
  }
}

}  // namespace bccl
