#include "core/comm_config.h"

#include <sstream>

#include "core/params.h"

namespace bccl {
namespace {

const IntParam kTimeoutMs("BCCL_TIMEOUT_MS", 300000,
                          "Deadline of every wait without progress, in milliseconds");
const StringParam kTransport("BCCL_TRANSPORT", "",
                             "Comma list of allowed transports (shm, tcp); default all built");

Status parseTransports(const std::string& list, CommConfig* out) {
  out->allowShm = out->allowTcp = false;
  std::stringstream in(list);
  std::string name;
  while (std::getline(in, name, ',')) {
    if (name == "shm") {
      out->allowShm = true;
    } else if (name == "tcp") {
      out->allowTcp = true;
    } else if (name == "verbs" || name == "ucx") {
      return invalidArgument("transport '" + name + "' is not available: built without it");
    } else {
      return invalidArgument("unknown transport '" + name + "' (known: shm, tcp)");
    }
  }
  if (!out->allowShm && !out->allowTcp) return invalidArgument("no transport allowed");
  return Status::ok();
}

}  // namespace

StatusOr<CommConfig> resolveConfig(const bcclConfig_t* config) {
  CommConfig c;
  if (config != nullptr) {
    if (config->magic != BCCL_CONFIG_MAGIC)
      return invalidArgument("config has the wrong magic: initialise it with BCCL_CONFIG_INITIALIZER");
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
