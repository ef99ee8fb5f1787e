// A worker's whole-task Failure (the user's: a bad name, a refused module, a version mismatch)
// as the status the caller gets, by its meaning.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "worker.pb.h"

namespace cnp::calls {

// `first_document` is the index in the caller's call of the task's first document, for a
// failure on one document ("document 150: invalid JSON ...").
absl::Status FailureToStatus(const worker::v1::Failure& failure, int64_t first_document = 0);

}  // namespace cnp::calls
