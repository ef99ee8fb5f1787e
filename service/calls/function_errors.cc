#include "service/calls/function_errors.h"

#include <atomic>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/common/log.h"
#include "service/metrics/service_metrics.h"

namespace cnp::calls {
namespace {

using worker::v1::Reply;

// At most this many lines a second about functions that raised: a broken view function over
// a large database raises on every document, and the counter already says how many.
constexpr int64_t kFunctionErrorLinesPerSecond = 20;

void LogFunctionError(const v1::FunctionError& e) {
  static std::atomic<int64_t> second{0};
  static std::atomic<int64_t> lines{0};
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  if (int64_t was = second.load(std::memory_order_relaxed); was != now &&
      second.compare_exchange_strong(was, now, std::memory_order_relaxed)) {
    lines.store(0, std::memory_order_relaxed);
  }
  if (lines.fetch_add(1, std::memory_order_relaxed) >= kFunctionErrorLinesPerSecond) return;
  LogEvent(LogLevel::kWarning, absl::StrCat("function raised ", e.type(), ": ", e.message()),
           {{"function", e.function()}, {"doc_id", e.doc_id()}, {"error", e.type()}});
}

void Count(const v1::FunctionError& e) {
  metrics::FunctionError(e.function());
  LogFunctionError(e);
}

}  // namespace

void CountFunctionErrors(const Reply& reply) {
  switch (reply.kind_case()) {
    case Reply::kMap:
      for (const v1::MapResult& result : reply.map().results()) {
        for (const v1::FunctionError& e : result.errors()) Count(e);
      }
      break;
    case Reply::kReduce:
      for (const v1::FunctionError& e : reply.reduce().errors()) Count(e);
      break;
    case Reply::kValidate:
      if (reply.validate().has_error()) Count(reply.validate().error());
      break;
    case Reply::kDesign:
      if (reply.design().has_error()) Count(reply.design().error());
      break;
    default:
      break;
  }
}

}  // namespace cnp::calls
