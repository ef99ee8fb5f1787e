// A worker's whole-task Failure (the user's: a bad name, a refused module, a version mismatch)
// as the status the caller gets, by its meaning.
#pragma once

#include "absl/status/status.h"
#include "worker.pb.h"

namespace cnp::calls {

absl::Status FailureToStatus(const worker::v1::Failure& failure);

}  // namespace cnp::calls
