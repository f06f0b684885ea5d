// The layout of a rank's shared-memory segment. Every rank owns one segment holding its
// doorbell, its board (shm_board.h) and one inbound ring per local peer; a sender writes into
// the receiver's segment.
// Large messages may skip the ring: the sender publishes a descriptor of its buffer and the
// receiver copies (or reduces) straight out of it (plain loads between threads of a process,
// process_vm_readv between processes when BCCL_SHM_CMA_THRESHOLD asks for it).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "transport/wait_set.h"

namespace bccl {

struct alignas(64) ShmRingHeader {
  alignas(64) std::atomic<uint64_t> head{0};       // slots published (written by the sender)
  alignas(64) std::atomic<uint64_t> tail{0};       // slots consumed (written by the receiver)
  alignas(64) std::atomic<uint64_t> acks{0};       // descriptor messages fully read by the receiver
  std::atomic<uint32_t> receiverCanReadSender{0};  // set by the receiver after a CMA probe
};

enum class ShmSlotKind : uint32_t { kInline = 1, kDescriptor = 2 };

// A descriptor slot's life: the receiver claims it before reading the sender's buffer, and a
// sender that abandons the message (its operation failed, and its buffer may be freed once the
// call returns) cancels it; whichever comes first wins, so nobody reads memory that is gone.
enum ShmDescriptorState : uint32_t {
  kDescriptorPublished = 1,
  kDescriptorClaimed = 2,
  kDescriptorCancelled = 3,
  kDescriptorDone = 4,
};

struct alignas(64) ShmSlotHeader {
  uint64_t msgBytes;    // the whole message's length, to catch mismatched counts
  uint64_t offset;      // of this slot's bytes within the message
  uint64_t bytes;       // payload bytes in this slot (inline) or the whole message (descriptor)
  uint64_t remoteAddr;  // descriptor: sender's buffer address
  ShmSlotKind kind;
  uint32_t seq;
  std::atomic<uint32_t> descriptorState;  // ShmDescriptorState, for descriptor slots
  int32_t abandonCause;  // when cancelled: the rank whose failure made the sender give up, or -1
};

// The first 64 bytes of every segment.
struct ShmSegmentHeader {
  Doorbell bell;
  std::atomic<uint32_t> ready{0};     // kShmReadyMagic once the owner has sized and mapped it
  std::atomic<uint32_t> attached{0};  // local peers that have mapped it (then the name goes)
};
static_assert(sizeof(ShmSegmentHeader) <= 64, "segment header must fit its 64 bytes");
constexpr uint32_t kShmReadyMagic = 0xBCC15E61u;

// A board: two alternating areas (by operation parity) where a rank posts a whole small input.
struct alignas(64) ShmBoardHeader {
  alignas(64) std::atomic<uint64_t> posted[2];  // the operation number each area holds
  alignas(64) Doorbell bell;                    // rank 0's is the group's: waiters sleep on it
};

struct ShmGeometry {
  size_t slotBytes;
  size_t slots;
  size_t localRanks;
  size_t boardCapacity = 0;  // bytes per board area, a multiple of 64 (0: no board)

  size_t slotStride() const { return sizeof(ShmSlotHeader) + slotBytes; }
  size_t ringBytes() const { return sizeof(ShmRingHeader) + slots * slotStride(); }
  size_t doorbellBytes() const { return 64; }
  size_t boardBytes() const { return sizeof(ShmBoardHeader) + 2 * boardCapacity; }
  size_t segmentBytes() const { return doorbellBytes() + boardBytes() + localRanks * ringBytes(); }

  static ShmSegmentHeader* header(char* segment) {
    return reinterpret_cast<ShmSegmentHeader*>(segment);
  }
  static Doorbell* doorbell(char* segment) { return &header(segment)->bell; }
  static ShmBoardHeader* board(char* segment) {
    return reinterpret_cast<ShmBoardHeader*>(segment + 64);
  }
  ShmRingHeader* ring(char* segment, size_t fromLocalRank) const {
    return reinterpret_cast<ShmRingHeader*>(segment + doorbellBytes() + boardBytes() +
                                            fromLocalRank * ringBytes());
  }
  ShmSlotHeader* slot(ShmRingHeader* ring, uint64_t index) const {
    return reinterpret_cast<ShmSlotHeader*>(reinterpret_cast<char*>(ring) + sizeof(ShmRingHeader) +
                                            (index % slots) * slotStride());
  }
  static char* slotData(ShmSlotHeader* s) { return reinterpret_cast<char*>(s + 1); }
};

}  // namespace bccl
