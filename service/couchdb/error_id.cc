#include "service/couchdb/error_id.h"

#include "common/call_limit.h"

namespace cnp::couchdb {

std::string_view InfrastructureErrorId(const absl::Status& status) {
  if (CallLimitOf(status).has_value()) return "too_large";
  switch (status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      return "timeout";
    case absl::StatusCode::kUnavailable:
      return "unavailable";
    case absl::StatusCode::kResourceExhausted:
      return "overloaded";
    default:
      return "internal_error";
  }
}

}  // namespace cnp::couchdb
