#include "service/common/function_log.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/common/log.h"

namespace cnp {
namespace {

// At most `limit` lines and `byte_limit` bytes a second of one sort reach the log; the lines
// left out are counted and the next second's first line says how many. (A worker's own cap on
// the tracebacks it formats is announced by the worker: kTracebacksLeftOutKind.) A function
// that logs (or raises) on every document of a large index would otherwise make the log (and
// the thread writing it) the bottleneck, and fill the disk under it.
class LineBudget {
 public:
  LineBudget(int64_t limit, int64_t byte_limit, const char* what)
      : limit_(limit), byte_limit_(byte_limit), what_(what) {}

  // Whether the next line may be written; `format` makes it (its bytes, as written, are
  // counted) and is called only while this second has room, so that a flood of lines left out
  // costs no formatting.
  bool Admit(absl::FunctionRef<size_t()> format) {
    const int64_t now = absl::ToUnixSeconds(absl::Now());
    if (int64_t was = second_.load(std::memory_order_relaxed);
        was != now && second_.compare_exchange_strong(was, now, std::memory_order_relaxed)) {
      lines_.store(0, std::memory_order_relaxed);
      bytes_.store(0, std::memory_order_relaxed);
      if (const int64_t left_out = dropped_.exchange(0, std::memory_order_relaxed);
          left_out > 0) {
        LogWarning(left_out, " ", what_,
                   " were left out of this log in the last second(s) (at most ", limit_,
                   " lines and ", byte_limit_ >> 10,
                   " KiB a second); their callers and CouchDB got them all");
      }
    }
    if (lines_.fetch_add(1, std::memory_order_relaxed) < limit_ &&
        bytes_.load(std::memory_order_relaxed) < byte_limit_) {
      const int64_t bytes = static_cast<int64_t>(format());
      if (bytes_.fetch_add(bytes, std::memory_order_relaxed) + bytes <= byte_limit_) return true;
    }
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

 private:
  const int64_t limit_;
  const int64_t byte_limit_;
  const char* const what_;
  std::atomic<int64_t> second_{0};
  std::atomic<int64_t> lines_{0};
  std::atomic<int64_t> bytes_{0};
  std::atomic<int64_t> dropped_{0};
};

LineBudget& LogLines() {
  static LineBudget budget(kFunctionLogLinesPerSecond, kFunctionLogBytesPerSecond,
                           "log() lines of functions");
  return budget;
}

LineBudget& Exceptions() {
  static LineBudget budget(kFunctionExceptionLinesPerSecond, kFunctionExceptionBytesPerSecond,
                           "exceptions of functions");
  return budget;
}

}  // namespace

void LogFunctionLines(const google::protobuf::RepeatedPtrField<worker::v1::FunctionLog>& lines,
                      absl::string_view session, absl::string_view peer) {
  for (const worker::v1::FunctionLog& line : lines) {
    if (line.kind() == kTracebacksLeftOutKind) {
      // A worker's count of the tracebacks it did not format: not a function's line, and never
      // left out itself (at most one a second per worker).
      LogEvent(LogLevel::kWarning, line.message(), {{"session", session}, {"peer", peer}});
      continue;
    }
    std::string written;
    if (!line.error().empty()) {
      const bool admitted = Exceptions().Admit([&] {
        written = FormatEvent(LogLevel::kWarning, line.message(),
                              {{"function", line.function()},
                               {"kind", line.kind()},
                               {"doc_id", line.doc_id()},
                               {"error", line.error()},
                               {"session", session},
                               {"peer", peer},
                               {"traceback", line.traceback()}});
        return written.size();
      });
      if (admitted && !written.empty()) WriteLogLine(STDERR_FILENO, written);
      continue;
    }
    const bool admitted = LogLines().Admit([&] {
      written = FormatEvent(LogLevel::kInfo, line.message(),
                            {{"function", line.function()},
                             {"kind", line.kind()},
                             {"doc_id", line.doc_id()},
                             {"session", session},
                             {"peer", peer}});
      return written.size();
    });
    if (admitted && !written.empty()) WriteLogLine(STDERR_FILENO, written);
  }
}

}  // namespace cnp
