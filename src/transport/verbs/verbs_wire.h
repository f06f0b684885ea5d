// What verbs peers exchange: the bring-up blob (through the bootstrap's side channel) and, on the
// wire, grants and the 32-bit immediate values of RDMA WRITE WITH IMM.
//
// The protocol, receiver-driven: a receiver that has posted a receive *grants* the sender a
// place to write each chunk of that message (a slot of its pre-registered receive ring, or,
// with zero copy, the registered user buffer itself), by an RDMA WRITE WITH IMM of a Grant into
// the sender's grant FIFO. The sender answers each grant with one RDMA WRITE WITH IMM of the
// chunk's bytes, whose immediate names the grant. So every credit is explicit: a grant is the
// right to write, issued only when the receiver has a free slot and a free grant entry, and it
// comes back when the chunk lands. The sender never guesses where to write, and each grant
// carries the receiver's expected message size, so a size mismatch is detected by the sender
// (which tells the receiver with an error immediate) before a byte is written.
//
// Small messages need not wait for a grant: the receiver hands the sender a few *eager* slots
// up front (its eager ring, in the blob), and a sender with an eager credit writes header and
// payload there at once, so a small message costs one write and one one-way latency. The
// receiver returns eager credits with a credit immediate. It grants small receives only lazily
// (when the message has not come after a while, or before sleeping), which keeps a sender
// without credits, or one whose size disagrees, from waiting forever; a sender answers a grant
// for a message it already sent eagerly with a cancel immediate, which frees the grant.
#pragma once

#include <cstdint>

namespace bccl {

// How to reach a port: what an RC QP's RTR transition needs of the remote end.
struct VerbsAddress {
  uint32_t mtu = 0;  // ibv_mtu enum of the port's active MTU
  uint16_t lid = 0;
  uint8_t linkLayer = 0;
  uint8_t hasGid = 0;
  uint8_t gid[16] = {};
};

// Per QP, what the other side needs to address it and write into it.
struct VerbsQpBlob {
  VerbsAddress addr;  // the port of the device the QP lives on
  uint32_t qpn = 0;
  uint32_t psn = 0;
  uint64_t ringAddr = 0;  // receive ring: slots x slotBytes, remote-writable
  uint32_t ringRkey = 0;
  uint32_t grantRkey = 0;
  uint64_t grantAddr = 0;  // grant FIFO: grantSlots Grants, remote-writable
};

constexpr uint32_t kVerbsBlobMagic = 0xBCC1AB1Eu;
constexpr uint32_t kVerbsMaxQps = 16;
constexpr uint32_t kVerbsZeroCopy = 1;

// One per connection direction, exchanged over the bootstrap side channel. Fixed size.
struct VerbsBlob {
  uint32_t magic = kVerbsBlobMagic;
  uint32_t qps = 0;
  uint32_t slots = 0;
  uint32_t slotBytes = 0;
  uint32_t grantSlots = 0;
  uint32_t rails = 0;  // devices the data QPs are spread over (QP i on device i % rails)
  uint32_t flags = 0;  // kVerbsZeroCopy when this side registers user buffers
  uint32_t eagerSlots =
      0;  // eager ring (written over the control QP): slots of kVerbsEagerHeader + eagerBytes
  uint32_t eagerBytes = 0;
  uint32_t eagerRkey = 0;
  uint64_t eagerAddr = 0;
  VerbsQpBlob ctrl;  // the control QP (grants, credits): only qpn and psn are used
  VerbsQpBlob qp[kVerbsMaxQps];
};

// At the start of an eager slot, written together with the payload that follows it.
struct VerbsEagerHeader {
  uint32_t seq = 0;
  uint32_t bytes = 0;
  uint64_t reserved = 0;
};
constexpr size_t kVerbsEagerHeader = sizeof(VerbsEagerHeader);

// Written by the receiver into the sender's grant FIFO. Its index in the FIFO is in the
// immediate value, and the data write that answers it carries the same index back.
struct VerbsGrant {
  uint64_t addr = 0;  // where to write (remote)
  uint32_t rkey = 0;
  uint32_t seq = 0;     // the message's sequence number in this direction
  uint64_t offset = 0;  // of this chunk within the message
  uint64_t bytes = 0;   // chunk length
  uint64_t total = 0;   // the whole message as the receiver expects it
};

// Immediate values: 3 bits of kind, 29 bits of index (grant entry, eager slot) or, for credits,
// the receiver's count of freed eager slots modulo 2^29. Grants travel on the control QP, so
// theirs also names the data QP whose FIFO they went to: (qp << 16) | entry.
enum class VerbsImm : uint32_t {
  kData = 0,           // a granted chunk landed (index: the grant)
  kGrant = 1,          // a grant is in the FIFO (index: its entry)
  kMismatch = 2,       // the sender's size differs from the grant's (index: the grant)
  kEager = 3,          // an eager message landed (index: the eager slot)
  kCancel = 4,         // the grant's message went eagerly: the grant is free again
  kCredit = 5,         // eager slots freed so far (index: the count)
  kEagerMismatch = 6,  // an eager message had another size (index: the size expected)
  kQpNotice = 7,       // about a data QP, on the control QP (index: see qpNoticeIndex)
};
// Notices of kQpNotice. Down: the sender's copy of that QP failed, stop using it. Closed: every
// grant that QP left unanswered has been granted again (so any other chunk on it had landed).
// Up: the sender's end of the QP is reset and connected again, for the incarnation given.
constexpr uint32_t kQpDown = 1;
constexpr uint32_t kQpClosed = 2;
constexpr uint32_t kQpUp = 3;
inline uint32_t qpNoticeIndex(uint32_t notice, uint32_t qp, uint32_t incarnation) {
  return ((incarnation & 0xffff) << 12) | ((notice & 0xf) << 8) | (qp & 0xff);
}
constexpr uint32_t kVerbsImmIndexMask = (1u << 29) - 1;
inline uint32_t makeImm(VerbsImm kind, uint32_t index) {
  return (static_cast<uint32_t>(kind) << 29) | (index & kVerbsImmIndexMask);
}
inline VerbsImm immKind(uint32_t imm) { return static_cast<VerbsImm>(imm >> 29); }
inline uint32_t immIndex(uint32_t imm) { return imm & kVerbsImmIndexMask; }

}  // namespace bccl
