// The registry of every BCCL_* environment variable. Each parameter is declared once, as a
// namespace-scope constant next to the code that uses it, with its default and help text; the
// registry lets tools (bccl_info) list them all. Values are read from the environment at get()
// time, so a process may change them between communicator creations.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace bccl {

struct ParamInfo {
  const char* name;
  std::string defaultValue;
  const char* help;
};

// Calls fn for every registered parameter, in name order.
void forEachParam(const std::function<void(const ParamInfo&, const char* currentValue)>& fn);

class IntParam {
 public:
  IntParam(const char* name, int64_t defaultValue, const char* help);
  // The environment value if set and a valid integer, else the default (a malformed value is
  // logged once and ignored).
  int64_t get() const;
  const char* name() const { return name_; }

 private:
  const char* name_;
  int64_t default_;
};

class StringParam {
 public:
  StringParam(const char* name, const char* defaultValue, const char* help);
  std::string get() const;
  bool isSet() const;
  const char* name() const { return name_; }

 private:
  const char* name_;
  const char* default_;
};

}  // namespace bccl
