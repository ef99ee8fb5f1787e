#include "service/common/function_log.h"

#include <atomic>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/common/log.h"

namespace cnp {
namespace {

// Whether one more line may be written this second. A function that logs on every document of
// a large index would otherwise make the log (and the thread writing it) the bottleneck.
bool Admit() {
  static std::atomic<int64_t> second{0};
  static std::atomic<int64_t> lines{0};
  static std::atomic<int64_t> dropped{0};
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  if (int64_t was = second.load(std::memory_order_relaxed);
      was != now && second.compare_exchange_strong(was, now, std::memory_order_relaxed)) {
    lines.store(0, std::memory_order_relaxed);
    if (const int64_t left_out = dropped.exchange(0, std::memory_order_relaxed); left_out > 0) {
      LogWarning(left_out, " log() lines of functions were left out of this log in the last "
                 "second(s) (at most ", kFunctionLogLinesPerSecond,
                 " a second); their callers and CouchDB got them all");
    }
  }
  if (lines.fetch_add(1, std::memory_order_relaxed) < kFunctionLogLinesPerSecond) return true;
  dropped.fetch_add(1, std::memory_order_relaxed);
  return false;
}

}  // namespace

void LogFunctionLines(const google::protobuf::RepeatedPtrField<worker::v1::FunctionLog>& lines,
                      absl::string_view session, absl::string_view peer) {
  for (const worker::v1::FunctionLog& line : lines) {
    if (!Admit()) continue;
    LogEvent(LogLevel::kInfo, line.message(),
             {{"function", line.function()},
              {"kind", line.kind()},
              {"doc_id", line.doc_id()},
              {"session", session},
              {"peer", peer}});
  }
}

}  // namespace cnp
