#include "common/retry_advice.h"

namespace cnp {
namespace {

constexpr char kNotRetryable[] = "cnp.v1/not-retryable";

}  // namespace

absl::Status NotRetryable(absl::Status status) {
  status.SetPayload(kNotRetryable, absl::Cord());
  return status;
}

bool IsNotRetryable(const absl::Status& status) {
  return status.GetPayload(kNotRetryable).has_value();
}

}  // namespace cnp
