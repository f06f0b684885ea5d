// The copy for bulk data (message chunks, staging slots, a rank's own block): one routine,
// chosen once per process by timing the candidates on this machine. glibc's memcpy is the best
// on real hardware and stays the choice there; under binary translation (qemu TCG, as in the
// soft-RoCE guest CI runs) its `rep movsb` path for mid-sized copies runs several times slower
// than other ways of moving the same bytes (docs/measurements/copy-under-tcg-20261208.txt).
#pragma once

#include <cstddef>
#include <vector>

namespace bccl {

// memcpy(dst, src, bytes) through the chosen routine. dst and src must not overlap.
void copyBulk(void* dst, const void* src, size_t bytes);

// The chosen routine's name ("memcpy", "vector" or "movsq"), choosing it if not done yet.
const char* bulkCopyKernel();
// Every routine this build has, memcpy first.
std::vector<const char*> bulkCopyKernels();
// Overrides the choice process-wide ("auto" measures again); false, changing nothing, for an
// unknown name. Tests cover every routine with it; BCCL_COPY_KERNEL sets it for a process.
bool setBulkCopyKernel(const char* name);

}  // namespace bccl
