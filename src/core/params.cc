#include "core/params.h"

#include <cerrno>
#include <cstdlib>
#include <map>
#include <mutex>

#include "core/logging.h"

namespace bccl {
namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, ParamInfo> params;
};

// Function-local so that parameters declared in any translation unit can register during
// static initialisation without an ordering problem.
Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

void registerParam(const char* name, std::string def, const char* help) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.params[name] = ParamInfo{name, std::move(def), help};
}

}  // namespace

void forEachParam(const std::function<void(const ParamInfo&, const char*)>& fn) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& kv : r.params) fn(kv.second, getenv(kv.first.c_str()));
}

IntParam::IntParam(const char* name, int64_t defaultValue, const char* help)
    : name_(name), default_(defaultValue) {
  registerParam(name, std::to_string(defaultValue), help);
}

int64_t IntParam::get() const {
  const char* v = getenv(name_);
  if (v == nullptr || *v == '\0') return default_;
  char* end = nullptr;
  errno = 0;
  long long parsed = strtoll(v, &end, 0);
  if (errno != 0 || end == v || *end != '\0') {
    BCCL_WARN("ignoring %s=%s: not an integer, using %lld", name_, v,
              static_cast<long long>(default_));
    return default_;
  }
  return parsed;
}

StringParam::StringParam(const char* name, const char* defaultValue, const char* help)
    : name_(name), default_(defaultValue) {
  registerParam(name, defaultValue, help);
}

std::string StringParam::get() const {
  const char* v = getenv(name_);
  return (v != nullptr && *v != '\0') ? std::string(v) : std::string(default_);
}

bool StringParam::isSet() const {
  const char* v = getenv(name_);
  return v != nullptr && *v != '\0';
}

}  // namespace bccl
