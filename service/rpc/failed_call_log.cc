#include "service/rpc/failed_call_log.h"


#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "service/common/line_budget.h"
#include "service/common/log.h"

namespace cnp::rpc {
namespace {

constexpr int64_t kLinesPerSecond = 20;
constexpr int64_t kBytesPerSecond = 64 << 10;

}  // namespace

void LogFailedCall(absl::string_view rpc, const grpc::Status& status) {
  static LineBudget warnings(kLinesPerSecond, kBytesPerSecond, "warnings of failed calls");
  static LineBudget infos(kLinesPerSecond, kBytesPerSecond, "lines of failed calls");
  if (absl::StartsWith(rpc, "Health/")) return;
  LogLevel level = LogLevel::kInfo;
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::UNAUTHENTICATED:
    // A worker's crash, a deadline that passed: the call's own line names its function already
    // (service/calls: LogPoolFailure).
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return;
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::DATA_LOSS:
      level = LogLevel::kWarning;
      break;
    default:
      break;
  }
  if (!LogLevelEnabled(level)) return;
  const std::string code(
      absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())));
  LineBudget& budget = level == LogLevel::kInfo ? infos : warnings;
  budget.Write([&] {
    return FormatEvent(level, absl::StrCat("call failed: ", status.error_message()),
                       {{"code", code}});
  });
}

}  // namespace cnp::rpc
