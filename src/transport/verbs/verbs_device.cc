#include "transport/verbs/verbs_device.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "core/logging.h"
#include "core/params.h"

namespace bccl {
namespace {

const StringParam kIbHca("BCCL_IB_HCA", "",
                         "RDMA devices for the verbs transport: comma list of name[:port]; every "
                         "usable one carries QPs (QP i on the i-th, in turn), the first also the "
                         "control QP; default: the first device with an active port");
const IntParam kIbGidIndex("BCCL_IB_GID_INDEX", -1,
                           "GID index on the verbs port; -1: the RoCE v2 IPv4-mapped GID when the "
                           "port has one (else another RoCE v2 GID, else the first valid one); "
                           "InfiniBand ports use their LID unless an index is given");

// rxe reports this vendor id; together with the names it tells emulated devices from NICs.
constexpr uint32_t kRxeVendorId = 0xFFFFFF;

struct HcaWant {
  std::string name;
  int port = 0;  // 0: the first active port
};

StatusOr<std::vector<HcaWant>> parseHcaList(const std::string& list) {
  std::vector<HcaWant> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    HcaWant w;
    size_t colon = item.find(':');
    w.name = item.substr(0, colon);
    if (colon != std::string::npos) {
      char* end = nullptr;
      long port = strtol(item.c_str() + colon + 1, &end, 10);
      if (*end != '\0' || port < 1 || port > 255)
        return invalidArgument("BCCL_IB_HCA: bad port in '" + item + "' (want name[:port])");
      w.port = static_cast<int>(port);
    }
    out.push_back(w);
  }
  return out;
}

bool isIpv4Mapped(const ibv_gid& g) {
  static const uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return memcmp(g.raw, kPrefix, sizeof(kPrefix)) == 0;
}

bool isZero(const ibv_gid& g) {
  for (uint8_t b : g.raw)
    if (b != 0) return false;
  return true;
}

const char* gidTypeName(uint32_t t) {
  switch (t) {
    case IBV_GID_TYPE_IB:
      return "IB";
    case IBV_GID_TYPE_ROCE_V1:
      return "RoCE v1";
    case IBV_GID_TYPE_ROCE_V2:
      return "RoCE v2";
  }
  return "unknown";
}

// Picks the GID on an opened, active port. `asked` < 0 means automatic.
Status chooseGid(VerbsPort* p, int tableLen, int asked) {
  const std::string where = p->device + " port " + std::to_string(p->port);
  if (asked >= 0) {
    ibv_gid_entry e{};
    if (asked >= tableLen || ibv_query_gid_ex(p->context, p->port, asked, &e, 0) != 0 ||
        isZero(e.gid))
      return invalidArgument(where + " has no GID at index " + std::to_string(asked) +
                             " (BCCL_IB_GID_INDEX; its table has " + std::to_string(tableLen) +
                             " slots: see 'ibv_devinfo -v' or /sys/class/infiniband/" + p->device +
                             "/ports/" + std::to_string(p->port) + "/gids)");
    p->gidIndex = asked;
    p->gid = e.gid;
    p->gidType = gidTypeName(e.gid_type);
    return Status::ok();
  }
  if (p->linkLayer == IBV_LINK_LAYER_INFINIBAND) return Status::ok();  // LID routing, no GRH
  // One call for the whole table where the kernel offers it: querying slot by slot costs a
  // system call each, and rxe has hundreds of empty slots. Else slot by slot.
  int rank = 0, best = -1;  // 3: RoCE v2 IPv4-mapped, 2: RoCE v2, 1: anything valid
  ibv_gid_entry bestEntry{};
  std::vector<ibv_gid_entry> table(static_cast<size_t>(tableLen));
  ssize_t n = ibv_query_gid_table(p->context, table.data(), table.size(), 0);
  if (n < 0) {
    n = 0;
    for (int i = 0; i < tableLen; ++i)
      if (ibv_query_gid_ex(p->context, p->port, i, &table[static_cast<size_t>(n)], 0) == 0) ++n;
  }
  for (ssize_t i = 0; i < n; ++i) {
    const ibv_gid_entry& e = table[static_cast<size_t>(i)];
    if (static_cast<int>(e.port_num) != p->port || isZero(e.gid)) continue;
    int r = e.gid_type == IBV_GID_TYPE_ROCE_V2 ? (isIpv4Mapped(e.gid) ? 3 : 2) : 1;
    if (r > rank || (r == rank && static_cast<int>(e.gid_index) < best)) {
      rank = r;
      best = static_cast<int>(e.gid_index);
      bestEntry = e;
    }
  }
  if (best < 0)
    return invalidArgument(where +
                           " has no valid GID (is its network interface up and "
                           "addressed? RoCE needs an IP address on it)");
  p->gidIndex = best;
  p->gid = bestEntry.gid;
  p->gidType = gidTypeName(bestEntry.gid_type);
  return Status::ok();
}

// Opens `dev` and sets up the wanted (or first active) port; on failure says why.
StatusOr<VerbsPort> tryDevice(ibv_device* dev, int wantPort, int gidIndex) {
  VerbsPort p;
  p.device = ibv_get_device_name(dev);
  if (dev->node_type == IBV_NODE_RNIC)
    return invalidArgument(p.device +
                           " is an iWARP device, which needs rdma_cm (not used by bccl)");
  p.context = ibv_open_device(dev);
  if (p.context == nullptr)
    return systemError("cannot open " + p.device + ": " + strerror(errno) +
                       " (permissions on /dev/infiniband/uverbs*?)");
  ibv_device_attr attr{};
  if (ibv_query_device(p.context, &attr) != 0)
    return systemError("cannot query " + p.device + ": " + strerror(errno));
  p.software = p.device.rfind("rxe", 0) == 0 || p.device.rfind("siw", 0) == 0 ||
               attr.vendor_id == kRxeVendorId;
  std::string why;
  for (int port = 1; port <= attr.phys_port_cnt; ++port) {
    if (wantPort != 0 && port != wantPort) continue;
    ibv_port_attr pa{};
    if (ibv_query_port(p.context, static_cast<uint8_t>(port), &pa) != 0) {
      why += " port " + std::to_string(port) + ": query failed (" + strerror(errno) + ");";
      continue;
    }
    if (pa.state != IBV_PORT_ACTIVE) {
      why += " port " + std::to_string(port) + " is " + ibv_port_state_str(pa.state) + ";";
      continue;
    }
    p.port = port;
    p.linkLayer = pa.link_layer;
    p.lid = pa.lid;
    p.activeMtu = pa.active_mtu;
    BCCL_RETURN_IF_ERROR(chooseGid(&p, pa.gid_tbl_len, gidIndex));
    return p;
  }
  if (wantPort > attr.phys_port_cnt)
    return invalidArgument(p.device + " has no port " + std::to_string(wantPort) + " (it has " +
                           std::to_string(attr.phys_port_cnt) + ")");
  return invalidArgument(p.device + " has no active port:" + why);
}

struct DeviceList {
  ibv_device** list = nullptr;
  int count = 0;
  DeviceList() { list = ibv_get_device_list(&count); }
  ~DeviceList() {
    if (list != nullptr) ibv_free_device_list(list);
  }
};

}  // namespace

VerbsPort::VerbsPort(VerbsPort&& o) noexcept { *this = std::move(o); }

VerbsPort& VerbsPort::operator=(VerbsPort&& o) noexcept {
  if (this == &o) return *this;
  if (context != nullptr) ibv_close_device(context);
  context = o.context;
  o.context = nullptr;
  device = std::move(o.device);
  port = o.port;
  gidIndex = o.gidIndex;
  gid = o.gid;
  gidType = std::move(o.gidType);
  linkLayer = o.linkLayer;
  lid = o.lid;
  activeMtu = o.activeMtu;
  software = o.software;
  return *this;
}

VerbsPort::~VerbsPort() {
  if (context != nullptr) ibv_close_device(context);
}

int mtuBytes(ibv_mtu mtu) { return 128 << static_cast<int>(mtu); }  // IBV_MTU_256 == 1

std::string gidToString(const ibv_gid& gid) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(AF_INET6, gid.raw, buf, sizeof(buf)) == nullptr) return "?";
  return buf;
}

std::string VerbsPort::describe() const {
  std::string s = device + ":" + std::to_string(port);
  if (gidIndex >= 0) {
    s += " gid[" + std::to_string(gidIndex) + "] " + gidToString(gid) + " (" + gidType + ")";
  } else {
    s += " lid " + std::to_string(lid) + " (InfiniBand)";
  }
  s += " mtu " + std::to_string(mtuBytes(activeMtu));
  if (software) s += " (software RDMA)";
  return s;
}

StatusOr<std::vector<VerbsPort>> openVerbsPorts() {
  StatusOr<std::vector<HcaWant>> wants = parseHcaList(kIbHca.get());
  if (!wants.isOk()) return wants.status();
  const int gidIndex = static_cast<int>(kIbGidIndex.get());
  DeviceList devs;
  if (devs.list == nullptr || devs.count == 0)
    return invalidArgument(
        "no RDMA device found (ibv_get_device_list: " +
        std::string(devs.list == nullptr ? strerror(errno) : "empty") +
        "; is a driver loaded, e.g. rdma_rxe with 'rdma link add rxe0 type rxe netdev eth0'?)");
  std::string present, tried;
  for (int i = 0; i < devs.count; ++i)
    present += std::string(present.empty() ? "" : ", ") + ibv_get_device_name(devs.list[i]);
  std::vector<VerbsPort> opened;
  if (wants.value().empty()) {
    for (int i = 0; i < devs.count; ++i) {
      StatusOr<VerbsPort> p = tryDevice(devs.list[i], 0, gidIndex);
      if (p.isOk()) {
        opened.push_back(std::move(p.value()));
        return opened;
      }
      tried += "\n  " + p.status().message();
    }
    return invalidArgument("no usable RDMA device:" + tried);
  }
  for (const HcaWant& w : wants.value()) {
    ibv_device* dev = nullptr;
    for (int i = 0; i < devs.count; ++i)
      if (w.name == ibv_get_device_name(devs.list[i])) dev = devs.list[i];
    if (dev == nullptr) {
      tried += "\n  " + w.name + ": no such device (present: " + present + ")";
      continue;
    }
    StatusOr<VerbsPort> p = tryDevice(dev, w.port, gidIndex);
    if (p.isOk()) {
      opened.push_back(std::move(p.value()));
    } else {
      tried += "\n  " + p.status().message();
    }
  }
  if (opened.empty())
    return invalidArgument("no usable RDMA device in BCCL_IB_HCA=" + kIbHca.get() + ":" + tried);
  if (!tried.empty())
    BCCL_WARN("verbs: BCCL_IB_HCA=%s: skipping what is not usable:%s", kIbHca.get().c_str(),
              tried.c_str());
  return opened;
}

std::vector<std::string> describeVerbsDevices() {
  std::vector<std::string> out;
  DeviceList devs;
  if (devs.list == nullptr || devs.count == 0) {
    out.push_back("no RDMA devices");
    return out;
  }
  for (int i = 0; i < devs.count; ++i) {
    StatusOr<VerbsPort> p = tryDevice(devs.list[i], 0, static_cast<int>(kIbGidIndex.get()));
    out.push_back(p.isOk() ? p.value().describe() + " usable" : p.status().message());
  }
  return out;
}

}  // namespace bccl
