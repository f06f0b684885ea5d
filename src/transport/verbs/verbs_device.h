// Which RDMA devices, ports and GIDs this rank uses, and why. Everything about choosing them
// lives here: BCCL_IB_HCA (a comma list of device[:port]: every usable one is used, the first
// is the primary), BCCL_IB_GID_INDEX (or the
// RoCE v2 IPv4-mapped GID by default), the link layer and the port's active MTU. Errors name the
// device and say what is wrong with it (absent, port down, no such GID), so a misconfigured node
// is diagnosed from one message.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace bccl {

// An opened device with the port and GID chosen on it. Owns the ibv_context.
struct VerbsPort {
  ibv_context* context = nullptr;
  std::string device;  // e.g. "rxe0"
  int port = 1;
  int gidIndex = -1;  // -1: no GID (InfiniBand addressed by LID)
  ibv_gid gid{};
  std::string gidType;  // "RoCE v2", "RoCE v1", "IB"
  uint8_t linkLayer = IBV_LINK_LAYER_UNSPECIFIED;
  uint16_t lid = 0;
  ibv_mtu activeMtu = IBV_MTU_1024;
  bool software = false;  // rxe, siw: emulated in the kernel over an Ethernet NIC

  VerbsPort() = default;
  VerbsPort(const VerbsPort&) = delete;
  VerbsPort& operator=(const VerbsPort&) = delete;
  VerbsPort(VerbsPort&& o) noexcept;
  VerbsPort& operator=(VerbsPort&& o) noexcept;
  ~VerbsPort();

  // "rxe0:1 gid[1] ::ffff:10.77.0.1 (RoCE v2) mtu 1024", for logs, bccl_info and perf headers.
  std::string describe() const;
};

// Opens the devices and ports listed in BCCL_IB_HCA (each usable one, in order; those that are
// not are skipped with a WARN saying why) with BCCL_IB_GID_INDEX, or without a list the first
// active port of any device. The error, when none is usable, names every device tried and what
// was wrong with each.
StatusOr<std::vector<VerbsPort>> openVerbsPorts();

// One line per device and port, whether usable and why not, for bccl_info.
std::vector<std::string> describeVerbsDevices();

int mtuBytes(ibv_mtu mtu);
std::string gidToString(const ibv_gid& gid);

}  // namespace bccl
