#include "service/calls/failure_status.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/call_limit.h"

namespace cnp::calls {

absl::Status FailureToStatus(const worker::v1::Failure& failure, int64_t first_document) {
  using F = worker::v1::Failure;
  // The function it is about in front, "revmod.townmap: ValueError: ...": a call names several.
  // Not a name too long to be one (up to 512 bytes of it come back): its message says so, and
  // stays short. Then the document, by its index in the call.
  const bool named = !failure.function().empty() && failure.function().size() <= 200;
  const std::string document =
      failure.document() > 0
          ? absl::StrCat("document ", first_document + failure.document() - 1, ": ")
          : "";
  const std::string m = absl::StrCat(named ? absl::StrCat(failure.function(), ": ") : "",
                                     document, failure.message());
  switch (failure.code()) {
    case F::BAD_NAME:
    case F::BAD_INPUT: return absl::InvalidArgumentError(m);
    case F::NOT_FOUND: return absl::NotFoundError(m);
    case F::PERMISSION_DENIED: return absl::PermissionDeniedError(m);
    case F::VERSION_MISMATCH: return absl::FailedPreconditionError(m);
    // The failure does not say the call's limit (its message says the task's share of it):
    // marked as unknown, for FunctionCalls, which knows it, to say (function_calls.cc).
    case F::ANSWER_TOO_LARGE:
      return WithCallLimit(absl::ResourceExhaustedError(m), {CallLimit::Kind::kAnswer, 0});
    case F::INTERNAL:
    default: return absl::InternalError(m);
  }
}

}  // namespace cnp::calls
