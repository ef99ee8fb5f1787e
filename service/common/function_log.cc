#include "service/common/function_log.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "service/common/line_budget.h"
#include "service/common/log.h"

namespace cnp {
namespace {

constexpr char kCallersGotThem[] = "; their callers and CouchDB got them all";

LineBudget& LogLines() {
  static LineBudget budget(kFunctionLogLinesPerSecond, kFunctionLogBytesPerSecond,
                           "log() lines of functions", kCallersGotThem);
  return budget;
}

LineBudget& Exceptions() {
  static LineBudget budget(kFunctionExceptionLinesPerSecond, kFunctionExceptionBytesPerSecond,
                           "exceptions of functions", kCallersGotThem);
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
    if (!line.error().empty()) {
      Exceptions().Write([&] {
        return FormatEvent(LogLevel::kWarning, line.message(),
                           {{"function", line.function()},
                            {"kind", line.kind()},
                            {"doc_id", line.doc_id()},
                            {"error", line.error()},
                            {"session", session},
                            {"peer", peer},
                            {"traceback", line.traceback()}});
      });
      continue;
    }
    LogLines().Write([&] {
      return FormatEvent(LogLevel::kInfo, line.message(),
                         {{"function", line.function()},
                          {"kind", line.kind()},
                          {"doc_id", line.doc_id()},
                          {"session", session},
                          {"peer", peer}});
    });
  }
}

void CountFunctionLogLinesLeftOut(int64_t lines) { LogLines().CountLeftOut(lines); }

}  // namespace cnp
