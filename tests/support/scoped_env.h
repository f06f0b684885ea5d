// Sets environment variables for one scope and restores them after: bccl reads its parameters
// at each get(), so a test can change one for the objects it creates.
#ifndef BCCL_TESTS_SUPPORT_SCOPED_ENV_H_
#define BCCL_TESTS_SUPPORT_SCOPED_ENV_H_

#include <stdlib.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace bccltest {

class ScopedEnv {
 public:
  ScopedEnv(std::initializer_list<std::pair<const char*, const char*> > vars) {
    for (const auto& [name, value] : vars) set(name, value);
  }
  ScopedEnv(const char* name, const char* value) { set(name, value); }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->had) {
        setenv(it->name.c_str(), it->value.c_str(), 1);
      } else {
        unsetenv(it->name.c_str());
      }
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  struct Saved {
    std::string name;
    bool had;
    std::string value;
  };
  void set(const char* name, const char* value) {
    const char* old = getenv(name);
    saved_.push_back({name, old != nullptr, old != nullptr ? old : ""});
    setenv(name, value, 1);
  }
  std::vector<Saved> saved_;
};

}  // namespace bccltest

#endif  // BCCL_TESTS_SUPPORT_SCOPED_ENV_H_
