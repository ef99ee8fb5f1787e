// Small pieces every task handler shares: failure replies, function errors, logs.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "service/worker/function_registry.h"
#include "service/worker/py_ref.h"
#include "service/worker/user_exception.h"
#include "worker.pb.h"

namespace cnp::worker {

using ::cnp::worker::v1::Failure;
using ::cnp::worker::v1::Reply;
using ::cnp::worker::v1::Task;

// A whole-task failure.
Reply FailureReply(Failure::Code code, absl::string_view message, absl::string_view function = "");

// The answer to a task whose answer passed Context().answer's limit: Failure ANSWER_TOO_LARGE,
// small whatever was built. The log() lines collected for it are dropped with it (they were
// part of it), and the message says how many.
Reply AnswerTooLargeReply();

// The failure for a function the registry could not load.
Reply LoadFailureReply(const absl::Status& status, absl::string_view function);

// Loads each named function; on the first failure fills `failure` and returns false.
bool LoadAll(FunctionRegistry& registry, const google::protobuf::RepeatedPtrField<std::string>& names,
             std::vector<const LoadedFunction*>& loaded, Reply& failure);

void FillFunctionError(cnp::v1::FunctionError& error, absl::string_view function,
                       absl::string_view doc_id, const UserException& exception);

// Moves the log() lines collected so far into `logs`.
void TakeLogs(google::protobuf::RepeatedPtrField<std::string>& logs);

// Moves the attributed copies of the log() lines collected so far into `logs`, for the server's
// log (every reply that goes back over the server's socket carries them).
// JSON's name for the type of a value ParseJson built ("a string", "null"), for a refusal.
const char* JsonTypeName(PyObject* value);

void TakeAttributedLogs(google::protobuf::RepeatedPtrField<v1::FunctionLog>& logs);

// A JSON payload that may be empty: empty means `absent` (Py_None or a new {}).
enum class WhenEmpty { kNone, kEmptyDict };
absl::StatusOr<PyRef> ParseOptionalJson(const std::string& json, WhenEmpty when_empty);

// Stores what couch_named_python._runtime returned, (reply, error-or-None), as the reply JSON
// and a FunctionError (left empty when nothing was raised), and logs the exception (raised or
// a response that is not JSON) for the service's log, as a function of `kind`.
void StoreRuntimeResult(PyObject* outcome, std::string_view kind, absl::string_view function,
                        std::string* reply_json, cnp::v1::FunctionError* error);

// JSON text of a Python value, or nullopt with a Python exception set.
std::optional<std::string> ToJson(PyObject* value);

}  // namespace cnp::worker
