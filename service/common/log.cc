#include "service/common/log.h"

#include <unistd.h>

#include <atomic>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace cnp {
namespace {
std::atomic<LogLevel> g_level{LogLevel::kInfo};

constexpr absl::string_view Name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARN";
    case LogLevel::kError: return "ERROR";
  }
  return "?";
}
}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(level); }

bool ParseLogLevel(absl::string_view name, LogLevel& level) {
  if (name == "debug") level = LogLevel::kDebug;
  else if (name == "info") level = LogLevel::kInfo;
  else if (name == "warning" || name == "warn") level = LogLevel::kWarning;
  else if (name == "error") level = LogLevel::kError;
  else return false;
  return true;
}

void LogLine(LogLevel level, absl::string_view message) {
  if (level < g_level.load(std::memory_order_relaxed)) return;
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " ",
      Name(level), " cnp-server[", ::getpid(), "] ", message, "\n");
  // One write per line so that lines from several threads never interleave.
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace cnp
