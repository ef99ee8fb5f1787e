#include "common/retry_advice.h"

namespace cnp {
namespace {

constexpr char kNotRetryable[] = "cnp.v1/not-retryable";
constexpr char kServerStopping[] = "cnp.v1/server-stopping";

}  // namespace

absl::Status NotRetryable(absl::Status status) {
  status.SetPayload(kNotRetryable, absl::Cord());
  return status;
}

bool IsNotRetryable(const absl::Status& status) {
  return status.GetPayload(kNotRetryable).has_value();
}

absl::Status ServerStopping(absl::Status status) {
  status.SetPayload(kServerStopping, absl::Cord());
  return status;
}

bool IsServerStopping(const absl::Status& status) {
  return status.GetPayload(kServerStopping).has_value();
}

}  // namespace cnp
