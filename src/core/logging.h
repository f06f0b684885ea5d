// Rank-tagged logging on stderr, filtered by BCCL_DEBUG=WARN|INFO|TRACE. Several ranks may live
// in one process (one thread each), so the rank tag is per thread: API entry points and the
// library's own threads set it with ScopedLogRank.
#pragma once

#include <cstdarg>

namespace bccl {

enum class LogLevel { kNone = 0, kWarn = 1, kInfo = 2, kTrace = 3 };

LogLevel logLevel();
void logMessage(LogLevel level, const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

// Sets this thread's rank tag for the scope; restores the previous tag on exit.
class ScopedLogRank {
 public:
  explicit ScopedLogRank(int rank);
  ~ScopedLogRank();
  ScopedLogRank(const ScopedLogRank&) = delete;
  ScopedLogRank& operator=(const ScopedLogRank&) = delete;

 private:
  int previous_;
};

}  // namespace bccl

#define BCCL_LOG(level, ...)                                                        \
  do {                                                                              \
    if (::bccl::logLevel() >= ::bccl::LogLevel::level)                              \
      ::bccl::logMessage(::bccl::LogLevel::level, __FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
#define BCCL_WARN(...) BCCL_LOG(kWarn, __VA_ARGS__)
#define BCCL_INFO(...) BCCL_LOG(kInfo, __VA_ARGS__)
#define BCCL_TRACE(...) BCCL_LOG(kTrace, __VA_ARGS__)
