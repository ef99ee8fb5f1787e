// A user function's exception in the service's log, with its traceback: the caller got the
// exception as data (a FunctionError, a CouchDB error or log line, where the innermost frame of
// the operator's code is named); the operator also gets the whole traceback, once, as a WARN
// event attributed like a log() line (worker.proto's FunctionLog with `error` set), which the
// server writes for calls it serves and a direct session's worker writes itself.
//
// A broken view function raises on every document of a large index, so formatting is rationed:
// at most kRaisedTracebacksPerSecond events a second per worker. The rest cost one clock read;
// the calls' results and cnp_function_errors_total still have every one, and the next second's
// first event is preceded by a notice (kind "tracebacks_left_out") of how many were left out.
#pragma once

#include <string_view>

#include "service/worker/user_exception.h"

namespace cnp::worker {

inline constexpr int kRaisedTracebacksPerSecond = 20;

// Records `exception` (taken by TakeException, or built from an exception object the design
// runtime caught) for the service's log, attributed to `function`, `kind` and `doc_id`.
void LogRaised(const UserException& exception, std::string_view kind, std::string_view function,
               std::string_view doc_id);

// The same, attributed to the user function running now (Context().origin) and its document,
// whose _id is read only when the event is kept.
void LogRaised(const UserException& exception);

// The exception's traceback as Python prints it, without couch_named_python's own frames;
// falls back to `exception.Summary()` when it cannot be formatted.
std::string FormatTraceback(const UserException& exception);

}  // namespace cnp::worker
