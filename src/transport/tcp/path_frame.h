// What travels on each socket of a multipath TCP connection: frames with a fixed header. Data
// frames carry one chunk of a message (its number, its size, where the chunk goes); every frame
// also carries the sender's cumulative acknowledgement of the data frames it consumed from the
// same socket, so acknowledgements ride on data going the other way for free. Acknowledgement
// frames go alone only when nothing else is going that way; PATH_DOWN frames tell the peer a
// path was given up, so both ends stop using it and resend what it held; GOODBYE frames precede
// a normal close.
#pragma once

#include <cstdint>

namespace bccl {

constexpr uint32_t kFrameMagic = 0xBCC1F4A3u;

// Goodbye: the peer is closing its communicator; the connection closing next is not a failure.
enum FrameType : uint8_t { kFrameData = 1, kFrameAck = 2, kFramePathDown = 3, kFrameGoodbye = 4 };
// WantAck: acknowledge at once (the sender's completion waits for it, or it probes the path).
enum FrameFlags : uint8_t { kFrameWantAck = 1 };

struct FrameHeader {
  uint32_t magic = kFrameMagic;
  uint8_t type = kFrameData;
  uint8_t flags = 0;
  uint16_t path = 0;        // the sender's index for this socket (a consistency check)
  uint32_t len = 0;         // payload bytes after the header
  uint32_t generation = 0;  // PATH_DOWN: which incarnation of path `offset` failed
  uint64_t seq = 0;         // data: message number
  uint64_t msgBytes = 0;    // data: whole message size (mismatches are reported)
  uint64_t offset = 0;      // data: chunk offset; PATH_DOWN: path index
  uint64_t ack = 0;         // data frames of the other direction consumed on this socket
};
static_assert(sizeof(FrameHeader) == 48, "the frame header is a wire format");

}  // namespace bccl
