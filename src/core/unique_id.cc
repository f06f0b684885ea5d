#include "core/unique_id.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>

namespace bccl {
namespace {

constexpr uint32_t kIdMagic = 0xBCC1D001u;
constexpr char kStringPrefix[] = "bccl1-";

// Wire layout inside bcclUniqueId::internal (little-endian host order; ids never cross
// architectures in practice, and the checksum rejects anything garbled).
struct PackedId {
  uint32_t magic;
  uint16_t family;
  uint16_t port;
  uint8_t addr[16];
  uint8_t secret[kSecretBytes];
  uint32_t checksum;
};
static_assert(sizeof(PackedId) <= BCCL_UNIQUE_ID_BYTES, "unique id too large");
constexpr size_t kChecksummed = offsetof(PackedId, checksum);

uint32_t checksumOf(const PackedId& p) { return static_cast<uint32_t>(digest64(&p, kChecksummed)); }

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

uint64_t digest64(const void* data, size_t bytes, uint64_t seed) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = seed;
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

Status randomSecret(uint8_t* secret) {
  size_t got = 0;
  while (got < kSecretBytes) {
    ssize_t n = getrandom(secret + got, kSecretBytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errnoStatus("getrandom", errno);
    got += static_cast<size_t>(n);
  }
  return Status::ok();
}

void encodeUniqueId(const UniqueIdData& data, bcclUniqueId* id) {
  PackedId p{};
  p.magic = kIdMagic;
  p.family = static_cast<uint16_t>(data.rendezvous.family());
  p.port = static_cast<uint16_t>(data.rendezvous.port());
  if (p.family == AF_INET)
    memcpy(p.addr, &reinterpret_cast<const sockaddr_in*>(&data.rendezvous.storage)->sin_addr, 4);
  else
    memcpy(p.addr, &reinterpret_cast<const sockaddr_in6*>(&data.rendezvous.storage)->sin6_addr, 16);
  memcpy(p.secret, data.secret, kSecretBytes);
  p.checksum = checksumOf(p);
  memset(id->internal, 0, sizeof(id->internal));
  memcpy(id->internal, &p, sizeof(p));
}

StatusOr<UniqueIdData> decodeUniqueId(const bcclUniqueId& id) {
  PackedId p;
  memcpy(&p, id.internal, sizeof(p));
  if (p.magic != kIdMagic || p.checksum != checksumOf(p))
    return invalidArgument(
        "unique id is not valid (wrong magic or checksum): was it made by "
        "bcclGetUniqueId and passed on unchanged?");
  if (p.family != AF_INET && p.family != AF_INET6)
    return invalidArgument("unique id names an unknown address family");
  UniqueIdData d;
  if (p.family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&d.rendezvous.storage);
    a->sin_family = AF_INET;
    memcpy(&a->sin_addr, p.addr, 4);
    d.rendezvous.len = sizeof(sockaddr_in);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&d.rendezvous.storage);
    a->sin6_family = AF_INET6;
    memcpy(&a->sin6_addr, p.addr, 16);
    d.rendezvous.len = sizeof(sockaddr_in6);
  }
  d.rendezvous.setPort(p.port);
  memcpy(d.secret, p.secret, kSecretBytes);
  return d;
}

std::string uniqueIdToString(const bcclUniqueId& id) {
  static const char digits[] = "0123456789abcdef";
  std::string s = kStringPrefix;
  for (size_t i = 0; i < sizeof(PackedId); ++i) {
    auto b = static_cast<uint8_t>(id.internal[i]);
    s += digits[b >> 4];
    s += digits[b & 15];
  }
  return s;
}

StatusOr<bcclUniqueId> uniqueIdFromString(const std::string& text) {
  const size_t prefix = sizeof(kStringPrefix) - 1;
  if (text.size() != prefix + 2 * sizeof(PackedId) || text.compare(0, prefix, kStringPrefix) != 0)
    return invalidArgument("'" + text.substr(0, 40) +
                           "' is not a bccl unique id string (expected " +
                           std::to_string(prefix + 2 * sizeof(PackedId)) +
                           " characters starting '" + kStringPrefix + "')");
  bcclUniqueId id;
  memset(&id, 0, sizeof(id));
  for (size_t i = 0; i < sizeof(PackedId); ++i) {
    int hi = hexValue(text[prefix + 2 * i]), lo = hexValue(text[prefix + 2 * i + 1]);
    if (hi < 0 || lo < 0) return invalidArgument("unique id string has a non-hex character");
    id.internal[i] = static_cast<char>(hi * 16 + lo);
  }
  StatusOr<UniqueIdData> check = decodeUniqueId(id);
  if (!check.isOk()) return check.status();
  return id;
}

}  // namespace bccl
