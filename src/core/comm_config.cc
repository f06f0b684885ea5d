#include "core/comm_config.h"

#include <sstream>

#include "core/params.h"

namespace bccl {
namespace {

const IntParam kTimeoutMs("BCCL_TIMEOUT_MS", 300000,
                          "Deadline of every wait without progress, in milliseconds");
const StringParam kTransport(
    "BCCL_TRANSPORT", "",
    "Comma list of allowed transports (shm, tcp, ucx, verbs), network ones "
    "in order of preference; default shm,tcp (and verbs between hosts "
    "with hardware RDMA ports)");

Status parseTransports(const std::string& list, CommConfig* out) {
  out->allowShm = false;
  out->automatic = false;
  out->network.clear();
  std::stringstream in(list);
  std::string name;
  while (std::getline(in, name, ',')) {
    if (name == "shm") {
      out->allowShm = true;
    } else if (name == "tcp") {
      out->network.push_back(name);
    } else if (name == "ucx") {
#ifdef BCCL_HAVE_UCX
      out->network.push_back(name);
#else
      return invalidArgument(
          "transport not available: built without UCX (install libucx-dev and rebuild)");
#endif
    } else if (name == "verbs") {
#ifdef BCCL_HAVE_VERBS
      out->network.push_back(name);
#else
      return invalidArgument(
          "transport not available: built without verbs (install libibverbs-dev and rebuild)");
#endif
    } else {
      return invalidArgument("unknown transport '" + name + "' (known: shm, tcp, ucx, verbs)");
    }
  }
  if (!out->allowShm && out->network.empty()) return invalidArgument("no transport allowed");
  return Status::ok();
}

}  // namespace

StatusOr<CommConfig> resolveConfig(const bcclConfig_t* config) {
  CommConfig c;
  if (config != nullptr) {
    if (config->magic != BCCL_CONFIG_MAGIC)
      return invalidArgument(
          "config has the wrong magic: initialise it with BCCL_CONFIG_INITIALIZER");
    if (config->size < offsetof(bcclConfig_t, transports) + sizeof(const char*) ||
        config->size > (1u << 16))
      return invalidArgument("config has an implausible size " + std::to_string(config->size));
  }
  int64_t timeout = kTimeoutMs.get();
  if (config != nullptr && config->timeoutMs != BCCL_CONFIG_UNDEF_INT) timeout = config->timeoutMs;
  if (timeout <= 0 || timeout > 24LL * 3600 * 1000)
    return invalidArgument("timeoutMs must be in 1..86400000, got " + std::to_string(timeout));
  c.timeoutMs = static_cast<int>(timeout);
  std::string transports = kTransport.get();
  if (config != nullptr && config->transports != nullptr) transports = config->transports;
  if (!transports.empty()) BCCL_RETURN_IF_ERROR(parseTransports(transports, &c));
  return c;
}

}  // namespace bccl
