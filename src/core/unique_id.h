// What a bcclUniqueId holds: where the rendezvous listener is, and the secret that every
// connection of the communicator must present. The printable form is hex with a checksum, so a
// mistyped or truncated id is rejected instead of connecting somewhere wrong.
#pragma once

#include <cstdint>
#include <string>

#include "bccl/bccl.h"
#include "core/socket.h"
#include "core/status.h"

namespace bccl {

constexpr int kSecretBytes = 16;

struct UniqueIdData {
  SockAddr rendezvous;
  uint8_t secret[kSecretBytes] = {};
};

// Fills `secret` from the kernel's random source.
Status randomSecret(uint8_t* secret);
void encodeUniqueId(const UniqueIdData& data, bcclUniqueId* id);
StatusOr<UniqueIdData> decodeUniqueId(const bcclUniqueId& id);
std::string uniqueIdToString(const bcclUniqueId& id);
StatusOr<bcclUniqueId> uniqueIdFromString(const std::string& text);
// A 64-bit digest of any bytes (FNV-1a); used for ids derived from secrets, not for security.
uint64_t digest64(const void* data, size_t bytes, uint64_t seed = 1469598103934665603ull);

}  // namespace bccl
