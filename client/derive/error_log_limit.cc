#include "client/derive/error_log_limit.h"

namespace cnp::derive {

bool ErrorLogLimit::Allow(absl::Time now) {
  if (now - window_start_ >= window_) {
    window_start_ = now;
    logged_ = 0;
  }
  if (logged_ < burst_) {
    ++logged_;
    return true;
  }
  ++left_out_;
  return false;
}

int64_t ErrorLogLimit::TakeLeftOut(absl::Time now, bool final) {
  if (left_out_ == 0 || (!final && now - window_start_ < window_)) return 0;
  const int64_t left_out = left_out_;
  left_out_ = 0;
  return left_out;
}

}  // namespace cnp::derive
