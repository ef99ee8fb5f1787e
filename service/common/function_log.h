// log() lines of users' functions in the service's own log, attributed to what made them.
// couch_named_python's log() (CouchDB's `log` in map, validate, show...) reaches the caller
// in the call's results and CouchDB as ["log", ...] lines; operators also see each line in the
// service's log, one INFO event per line: the function's message, with `function`, `kind` and
// `doc_id` (where the call is about one document), and the call's `rpc` and `peer` (from the
// thread's CallLogScope) or, in a direct session, its `session` and `peer`.
//
// A function's exception travels the same way (a FunctionLog with `error` set, made by the
// worker's raised_log.h): one WARN event "function raised KeyError: 'town' (views/town.py:8 in
// townmap)" with the same attribution, the exception's class as `error` and its whole traceback
// as `traceback`.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_field.h"
#include "worker.pb.h"

namespace cnp {

// At most this many function log lines, and bytes of them, a second per process; beyond it
// they are counted, and the next second's first line says how many were left out (the caller
// still got them all). The bytes too: a function that logs what a document holds would let a
// caller write 200 lines of 16 KiB (kMaxLogLineBytes) a second, 11 GB an hour, to a journal.
inline constexpr int kFunctionLogLinesPerSecond = 200;
inline constexpr int64_t kFunctionLogBytesPerSecond = 256 << 10;
// The same for functions' exceptions, counted apart: a broken view function over a large
// database raises on every document (cnp_function_errors_total counts them all).
inline constexpr int kFunctionExceptionLinesPerSecond = 20;
inline constexpr int64_t kFunctionExceptionBytesPerSecond = 128 << 10;

// The `kind` of a worker's notice that it left tracebacks out (a worker formats at most
// kRaisedTracebacksPerSecond a second, service/worker/raised_log.h): its `message` says how
// many, and it is written as one WARN line, as the lines left out here are announced.
inline constexpr absl::string_view kTracebacksLeftOutKind = "tracebacks_left_out";

void LogFunctionLines(const google::protobuf::RepeatedPtrField<worker::v1::FunctionLog>& lines,
                      absl::string_view session = "", absl::string_view peer = "");

// Counts `lines` log() lines left out before they reached LogFunctionLines, with those it leaves
// out itself.
void CountFunctionLogLinesLeftOut(int64_t lines);

}  // namespace cnp
