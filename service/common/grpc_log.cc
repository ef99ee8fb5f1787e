#include "service/common/grpc_log.h"

#include <unistd.h>

#include <string>
#include <string_view>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/support/log.h"
#include "service/common/line_budget.h"
#include "service/common/log.h"

namespace cnp {
namespace {

// gRPC writes a line per rejected handshake or broken connection: a few a second is what an
// operator reads, the rest is counted.
constexpr int kGrpcLinesPerSecond = 20;
constexpr int64_t kGrpcBytesPerSecond = 64 << 10;

LogLevel LevelOf(gpr_log_severity severity) {
  switch (severity) {
    case GPR_LOG_SEVERITY_DEBUG:
      return LogLevel::kDebug;
    case GPR_LOG_SEVERITY_INFO:
      return LogLevel::kInfo;
    case GPR_LOG_SEVERITY_ERROR:
      break;
  }
  return LogLevel::kError;
}

void LogGrpcLine(gpr_log_func_args* args) {
  static LineBudget budget(kGrpcLinesPerSecond, kGrpcBytesPerSecond, "gRPC log lines");
  const std::string_view message = args->message != nullptr ? args->message : "";
  std::string_view file = args->file != nullptr ? args->file : "";
  if (const size_t slash = file.rfind('/'); slash != std::string_view::npos) {
    file.remove_prefix(slash + 1);
  }
  const std::string source = absl::StrCat("grpc ", std::string(file), ":", args->line);
  const auto format = [&] {
    return FormatEvent(LevelOf(args->severity), absl::string_view(message.data(), message.size()),
                       {{"source", source}});
  };
  // An assertion's line comes before gRPC aborts the process: never left out.
  if (absl::StartsWith(absl::string_view(message.data(), message.size()), "assertion failed")) {
    WriteLogLine(LogDescriptor(), format());
    return;
  }
  budget.Write(format);
}

}  // namespace

void RouteGrpcLogThroughServiceLog() { gpr_set_log_function(LogGrpcLine); }

}  // namespace cnp
