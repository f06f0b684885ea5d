#include "topology/topology.h"

#include <dirent.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "core/logging.h"
#include "core/params.h"

#ifdef BCCL_HAVE_HWLOC
#include <hwloc.h>
#endif

namespace bccl {
namespace {

const StringParam kTopoFile("BCCL_TOPO_FILE", "",
                            "Load the host topology from this JSON file instead of probing");
const StringParam kTopoDumpFile(
    "BCCL_TOPO_DUMP_FILE", "", "Write the discovered topology as JSON ('%h' host name, '%r' rank)");

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// A small reader for the flat JSON toJson() writes: objects, arrays, strings, integers.
class JsonReader {
 public:
  explicit JsonReader(const std::string& text) : s_(text) {}
  bool ok() const { return ok_; }
  void skip() {
    while (pos_ < s_.size() && isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool consume(char c) {
    skip();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!consume(c)) ok_ = false;
  }
  std::string string() {
    skip();
    std::string out;
    if (!consume('"')) {
      ok_ = false;
      return out;
    }
    while (pos_ < s_.size() && s_[pos_] != '"') {
      if (s_[pos_] == '\\' && pos_ + 1 < s_.size()) ++pos_;
      out += s_[pos_++];
    }
    if (!consume('"')) ok_ = false;
    return out;
  }
  long number() {
    skip();
    size_t start = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    while (pos_ < s_.size() && isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    if (start == pos_) ok_ = false;
    return ok_ ? atol(s_.substr(start, pos_ - start).c_str()) : 0;
  }

 private:
  const std::string& s_;
  size_t pos_ = 0;
  bool ok_ = true;
};

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int currentNumaNodeFromSys() {
  int cpu = sched_getcpu();
  DIR* d = opendir("/sys/devices/system/node");
  if (d == nullptr) return 0;
  int found = 0;
  while (dirent* e = readdir(d)) {
    int node = -1;
    if (sscanf(e->d_name, "node%d", &node) != 1) continue;
    std::string list = readFile("/sys/devices/system/node/" + std::string(e->d_name) + "/cpulist");
    std::stringstream in(list);
    std::string range;
    while (std::getline(in, range, ',')) {
      int lo = -1, hi = -1;
      if (sscanf(range.c_str(), "%d-%d", &lo, &hi) == 1) hi = lo;
      if (cpu >= lo && cpu <= hi) found = node;
    }
  }
  closedir(d);
  return found;
}

#ifdef BCCL_HAVE_HWLOC
StatusOr<HostTopology> probeHwloc() {
  hwloc_topology_t topo;
  if (hwloc_topology_init(&topo) != 0) return systemError("hwloc_topology_init failed");
  hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
  if (hwloc_topology_load(topo) != 0) {
    hwloc_topology_destroy(topo);
    return systemError("hwloc_topology_load failed");
  }
  HostTopology t;
  t.source = "hwloc";
  t.packages = std::max(1, hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE));
  t.numaNodes = std::max(1, hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE));
  t.cores = std::max(1, hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE));
  t.pus = std::max(1, hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU));
  for (hwloc_obj_type_t level : {HWLOC_OBJ_L3CACHE, HWLOC_OBJ_L2CACHE})
    if (hwloc_obj_t cache = hwloc_get_obj_by_type(topo, level, 0); t.llcBytes == 0 && cache)
      t.llcBytes = cache->attr->cache.size;
  hwloc_bitmap_t cpus = hwloc_bitmap_alloc(), nodes = hwloc_bitmap_alloc();
  if (hwloc_get_last_cpu_location(topo, cpus, HWLOC_CPUBIND_THREAD) == 0) {
    hwloc_cpuset_to_nodeset(topo, cpus, nodes);
    t.myNumaNode = std::max(0, hwloc_bitmap_first(nodes));
  }
  hwloc_bitmap_free(cpus);
  hwloc_bitmap_free(nodes);
  for (hwloc_obj_t dev = hwloc_get_next_osdev(topo, nullptr); dev != nullptr;
       dev = hwloc_get_next_osdev(topo, dev)) {
    hwloc_obj_osdev_type_t kind = dev->attr->osdev.type;
    if (kind != HWLOC_OBJ_OSDEV_NETWORK && kind != HWLOC_OBJ_OSDEV_OPENFABRICS) continue;
    NicInfo nic;
    nic.name = dev->name != nullptr ? dev->name : "?";
    nic.kind = kind == HWLOC_OBJ_OSDEV_NETWORK ? "net" : "rdma";
    hwloc_obj_t anchor = hwloc_get_non_io_ancestor_obj(topo, dev);
    if (anchor != nullptr && anchor->nodeset != nullptr)
      nic.numaNode = hwloc_bitmap_first(anchor->nodeset);
    t.nics.push_back(nic);
  }
  hwloc_topology_destroy(topo);
  return t;
}
#endif

// Without hwloc: counts from /sys, NICs from /sys/class/net and /sys/class/infiniband.
HostTopology probeSysfs() {
  HostTopology t;
  t.source = "sysfs";
  t.pus = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  t.cores = t.pus;
  for (int level : {_SC_LEVEL3_CACHE_SIZE, _SC_LEVEL2_CACHE_SIZE})
    if (long bytes = sysconf(level); t.llcBytes == 0 && bytes > 0)
      t.llcBytes = static_cast<uint64_t>(bytes);
  int nodes = 0;
  if (DIR* d = opendir("/sys/devices/system/node")) {
    while (dirent* e = readdir(d)) {
      int n = -1;
      if (sscanf(e->d_name, "node%d", &n) == 1) ++nodes;
    }
    closedir(d);
  }
  t.numaNodes = std::max(1, nodes);
  t.myNumaNode = currentNumaNodeFromSys();
  for (const char* cls : {"/sys/class/net", "/sys/class/infiniband"}) {
    DIR* d = opendir(cls);
    if (d == nullptr) continue;
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == ".." || name == "lo") continue;
      std::string numa = readFile(std::string(cls) + "/" + name + "/device/numa_node");
      if (std::string(cls) == "/sys/class/net" &&
          readFile(std::string(cls) + "/" + name + "/device/vendor").empty())
        continue;  // virtual interfaces (veth, bridges) have no device
      t.nics.push_back(
          NicInfo{name, std::string(cls).find("infiniband") != std::string::npos ? "rdma" : "net",
                  numa.empty() ? -1 : std::max(-1, atoi(numa.c_str()))});
    }
    closedir(d);
  }
  std::sort(t.nics.begin(), t.nics.end(),
            [](const NicInfo& a, const NicInfo& b) { return a.name < b.name; });
  return t;
}

std::string expandPath(std::string path, const std::string& host, int rank) {
  for (size_t at; (at = path.find("%h")) != std::string::npos;) path.replace(at, 2, host);
  for (size_t at; (at = path.find("%r")) != std::string::npos;)
    path.replace(at, 2, std::to_string(rank));
  return path;
}

}  // namespace

std::string HostTopology::toJson() const {
  std::ostringstream o;
  o << "{\n  \"host\": " << quote(host) << ",\n  \"source\": " << quote(source)
    << ",\n  \"packages\": " << packages << ",\n  \"numa_nodes\": " << numaNodes
    << ",\n  \"cores\": " << cores << ",\n  \"pus\": " << pus << ",\n  \"llc_bytes\": " << llcBytes
    << ",\n  \"my_numa_node\": " << myNumaNode << ",\n  \"nics\": [";
  for (size_t i = 0; i < nics.size(); ++i)
    o << (i ? "," : "") << "\n    {\"name\": " << quote(nics[i].name)
      << ", \"kind\": " << quote(nics[i].kind) << ", \"numa_node\": " << nics[i].numaNode << "}";
  o << (nics.empty() ? "" : "\n  ") << "]\n}\n";
  return o.str();
}

StatusOr<HostTopology> HostTopology::fromJson(const std::string& text) {
  HostTopology t;
  JsonReader in(text);
  in.expect('{');
  bool first = true;
  while (in.ok() && !in.consume('}')) {
    if (!first) in.expect(',');
    first = false;
    std::string key = in.string();
    in.expect(':');
    if (key == "host")
      t.host = in.string();
    else if (key == "source")
      t.source = in.string();
    else if (key == "packages")
      t.packages = static_cast<int>(in.number());
    else if (key == "numa_nodes")
      t.numaNodes = static_cast<int>(in.number());
    else if (key == "cores")
      t.cores = static_cast<int>(in.number());
    else if (key == "pus")
      t.pus = static_cast<int>(in.number());
    else if (key == "llc_bytes")
      t.llcBytes = static_cast<uint64_t>(std::max<long>(0, in.number()));
    else if (key == "my_numa_node")
      t.myNumaNode = static_cast<int>(in.number());
    else if (key == "nics") {
      in.expect('[');
      bool firstNic = true;
      while (in.ok() && !in.consume(']')) {
        if (!firstNic) in.expect(',');
        firstNic = false;
        NicInfo nic;
        in.expect('{');
        bool firstField = true;
        while (in.ok() && !in.consume('}')) {
          if (!firstField) in.expect(',');
          firstField = false;
          std::string field = in.string();
          in.expect(':');
          if (field == "name")
            nic.name = in.string();
          else if (field == "kind")
            nic.kind = in.string();
          else if (field == "numa_node")
            nic.numaNode = static_cast<int>(in.number());
          else
            return invalidArgument("topology file: unknown NIC field '" + field + "'");
        }
        t.nics.push_back(nic);
      }
    } else {
      return invalidArgument("topology file: unknown key '" + key + "'");
    }
  }
  if (!in.ok())
    return invalidArgument("topology file is not the JSON that BCCL_TOPO_DUMP_FILE writes");
  if (t.numaNodes < 1 || t.myNumaNode < 0 || t.myNumaNode >= t.numaNodes)
    return invalidArgument("topology file: my_numa_node must be within [0, numa_nodes)");
  return t;
}

StatusOr<HostTopology> discoverTopology(int rank) {
  char hostName[256] = {};
  gethostname(hostName, sizeof(hostName) - 1);
  StatusOr<HostTopology> found = HostTopology{};
  // Probing with hwloc takes tens of milliseconds: once per process, not per communicator.
  static std::mutex probeMu;
  static std::unique_ptr<HostTopology> probed;
  if (kTopoFile.isSet()) {
    std::string path = expandPath(kTopoFile.get(), hostName, rank);
    std::string text = readFile(path);
    if (text.empty()) return invalidArgument("BCCL_TOPO_FILE " + path + " is missing or empty");
    found = HostTopology::fromJson(text);
    if (!found.isOk()) return found.status().withContext(path);
    found.value().source = path;
  } else {
    std::lock_guard<std::mutex> lock(probeMu);
    if (probed == nullptr) {
#ifdef BCCL_HAVE_HWLOC
      found = probeHwloc();
      if (!found.isOk()) found = probeSysfs();
#else
      found = probeSysfs();
#endif
      found.value().host = hostName;
      probed = std::make_unique<HostTopology>(found.value());
    }
    found = *probed;
#ifdef BCCL_HAVE_HWLOC
    found.value().myNumaNode = found.value().numaNodes > 1 ? currentNumaNodeFromSys() : 0;
#else
    found.value().myNumaNode = currentNumaNodeFromSys();
#endif
  }
  if (kTopoDumpFile.isSet()) {
    std::string path = expandPath(kTopoDumpFile.get(), found.value().host, rank);
    std::ofstream out(path);
    out << found.value().toJson();
    if (!out) BCCL_WARN("cannot write BCCL_TOPO_DUMP_FILE %s", path.c_str());
  }
  return found;
}

Subgroups computeSubgroups(const std::vector<PeerInfo>& peers) {
  Subgroups g;
  const int n = static_cast<int>(peers.size());
  g.hostOf.assign(n, -1);
  g.localIndex.assign(n, 0);
  std::map<uint64_t, int> hostIndex;
  std::map<std::pair<int, int>, int> numaIndex;
  for (int r = 0; r < n; ++r) {
    auto it = hostIndex.find(peers[r].hostHash);
    if (it == hostIndex.end()) {
      it = hostIndex.emplace(peers[r].hostHash, static_cast<int>(g.hosts.size())).first;
      g.hosts.emplace_back();
    }
    g.hostOf[r] = it->second;
    g.localIndex[r] = static_cast<int>(g.hosts[it->second].size());
    g.hosts[it->second].push_back(r);
    auto key = std::make_pair(it->second, peers[r].numaNode);
    auto nit = numaIndex.find(key);
    if (nit == numaIndex.end()) {
      nit = numaIndex.emplace(key, static_cast<int>(g.numaDomains.size())).first;
      g.numaDomains.emplace_back();
    }
    g.numaDomains[nit->second].push_back(r);
  }
  return g;
}

}  // namespace bccl
