// Log line format: "<hh:mm:ss.mmm> <host>:<pid>:<tid> [rank] bccl LEVEL message". One write()
// per line so lines from different ranks and threads never interleave mid-line.
#include "core/logging.h"

#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>

#include "core/params.h"

namespace bccl {
namespace {

thread_local int tlsRank = -1;

LogLevel parseLevel(const std::string& s) {
  if (strcasecmp(s.c_str(), "WARN") == 0) return LogLevel::kWarn;
  if (strcasecmp(s.c_str(), "INFO") == 0) return LogLevel::kInfo;
  if (strcasecmp(s.c_str(), "TRACE") == 0) return LogLevel::kTrace;
  if (strcasecmp(s.c_str(), "NONE") == 0) return LogLevel::kNone;
  return LogLevel::kWarn;
}

const StringParam kDebug("BCCL_DEBUG", "WARN", "Log level on stderr: NONE, WARN, INFO or TRACE");

}  // namespace

LogLevel logLevel() {
  static const LogLevel level = parseLevel(kDebug.get());
  return level;
}

ScopedLogRank::ScopedLogRank(int rank) : previous_(tlsRank) { tlsRank = rank; }
ScopedLogRank::~ScopedLogRank() { tlsRank = previous_; }

void logMessage(LogLevel level, const char* file, int line, const char* fmt, ...) {
  static const char* names[] = {"NONE", "WARN", "INFO", "TRACE"};
  char host[64] = {0};
  gethostname(host, sizeof(host) - 1);
  // Wall-clock time with milliseconds: failure reports say when, comparable across hosts.
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  tm local{};
  localtime_r(&now.tv_sec, &local);
  char when[32];
  strftime(when, sizeof(when), "%H:%M:%S", &local);
  char buf[2048];
  int n = snprintf(buf, sizeof(buf), "%s.%03ld %s:%d:%ld [%d] bccl %s ", when,
                   now.tv_nsec / 1000000, host, static_cast<int>(getpid()),
                   static_cast<long>(syscall(SYS_gettid)), tlsRank, names[static_cast<int>(level)]);
  va_list ap;
  va_start(ap, fmt);
  if (n > 0 && n < static_cast<int>(sizeof(buf))) n += vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > static_cast<int>(sizeof(buf)) - 2) n = sizeof(buf) - 2;
  if (level == LogLevel::kTrace) {
    n += snprintf(buf + n, sizeof(buf) - n, " (%s:%d)",
                  strrchr(file, '/') ? strrchr(file, '/') + 1 : file, line);
    if (n > static_cast<int>(sizeof(buf)) - 2) n = sizeof(buf) - 2;
  }
  buf[n++] = '\n';
  ssize_t ignored = write(STDERR_FILENO, buf, n);
  (void)ignored;
}

}  // namespace bccl
