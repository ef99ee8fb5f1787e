// The documents or items on which a user's function raised, as operators see them: counted in
// cnp_function_errors_total, by function. One rule for what counts, wherever a reply arrives:
// the server's batch calls and Session streams count each reply into the metric; a direct
// session's worker tallies its replies and sends the tally to the server in SessionProgress
// frames (worker.proto), which the server counts into the same metric. They are logged, a few
// lines a second with their tracebacks, from the reply's function_logs
// (service/common/function_log.h).
#pragma once

#include <cstddef>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"
#include "worker.pb.h"

namespace cnp {

// Where a reply's function errors go, one call per error, with the function's name as the
// request named it.
using FunctionErrorSink = absl::FunctionRef<void(absl::string_view function)>;

// Gives `sink` every FunctionError a reply carries (none for a reply of another kind).
void CountFunctionErrors(const worker::v1::Reply& reply, FunctionErrorSink sink);

// What the server accepts of one SessionProgress frame: this many functions at most, each name
// at most the length the worker accepts for a function's name (service/worker/function_name.h
// kMaxFunctionNameBytes, which the worker checks is the same): a name it ran fits. A worker with
// more distinct failing functions than this between two frames counts the rest as "other", the
// label cnp_function_errors_total gives names past its own bound.
inline constexpr int kMaxProgressFunctions = 100;
inline constexpr size_t kMaxProgressNameBytes = 512;
inline constexpr absl::string_view kOtherFunctions = "other";

}  // namespace cnp
