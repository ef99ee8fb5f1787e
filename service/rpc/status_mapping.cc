#include "service/rpc/status_mapping.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/call_limit.h"
#include "common/retry_advice.h"

namespace cnp::rpc {

namespace {

// The trailers a status is to be answered with, carried from ToGrpcStatus (which has no
// context) to WithStatusTrailers in the status's details, which WithStatusTrailers empties
// again: never sent. After this prefix, one "name\tvalue\n" per trailer; neither a trailer's
// name nor its value can hold a tab or a newline.
constexpr char kTrailersMark[] = "cnp:trailers\n";

std::string TrailersOf(const absl::Status& status) {
  std::string trailers;
  if (IsNotRetryable(status)) {
    absl::StrAppend(&trailers, kRetryPushbackTrailer, "\t", kNeverRetry, "\n");
  }
  if (std::optional<CallLimit> limit = CallLimitOf(status)) {
    absl::StrAppend(&trailers, kCallLimitTrailer, "\t", CallLimitText(*limit), "\n");
  }
  return trailers.empty() ? "" : absl::StrCat(kTrailersMark, trailers);
}

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      TrailersOf(status));
}

grpc::Status WithStatusTrailers(grpc::Status status, grpc::ServerContext& context) {
  const std::string details = status.error_details();  // a copy: gRPC returns it by value
  absl::string_view trailers = details;
  if (!absl::ConsumePrefix(&trailers, kTrailersMark)) return status;
  for (absl::string_view line : absl::StrSplit(trailers, '\n', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> trailer = absl::StrSplit(line, '\t');
    context.AddTrailingMetadata(std::string(trailer.first), std::string(trailer.second));
  }
  return grpc::Status(status.error_code(), status.error_message());
}

}  // namespace cnp::rpc
