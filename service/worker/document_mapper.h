// The map hot path: one document's JSON -> a Python dict -> every map function -> the
// CouchDB map_doc reply [[[k,v],...],...], written by C++ with no Python JSON on the way.
// It knows nothing of protobuf, so the benchmark runs exactly this code.
#pragma once

#include <Python.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "service/worker/json_buffer.h"
#include "service/worker/user_exception.h"

namespace cnp::worker {

struct MapFailure {
  size_t function_index;
  UserException exception;
  size_t logs_before;  // log() lines collected for the document when the function raised
};

class DocumentMapper {
 public:
  // `functions` are borrowed and must outlive the mapper; `names` (the same order, or empty)
  // attribute their log() lines, and must outlive it too.
  explicit DocumentMapper(std::vector<PyObject*> functions,
                          std::vector<std::string_view> names = {})
      : functions_(std::move(functions)), names_(std::move(names)) {}

  // Maps one document, parsing `doc_json` in `buffer` (json_to_python.h's ParseDocument).
  // INVALID_ARGUMENT for malformed JSON; a function that raises is not an error (see
  // failures()), and neither is valid JSON Python is not given (nested deeper than Python is
  // given, an integer of more digits than int() converts): every function fails on it alone,
  // with a ValueError, as a
  // couchjs map function fails on a document it cannot serialise. Refusing it as a whole would
  // fail the call, and CouchDB retries a view's index update on that document for ever.
  // RESOURCE_EXHAUSTED when the rows (with the log lines and the errors) pass the room left for
  // the answer (Context().answer, which is then exceeded()) or Python ran out of memory parsing.
  absl::Status Map(std::string_view doc_json, std::string& buffer);

  // The reply for the last document: one array of rows per function; [] where it raised.
  absl::string_view rows() const { return {rows_.GetString(), rows_.GetSize()}; }
  const std::vector<MapFailure>& failures() const { return failures_; }
  // The last document's "_id", looked up only when a function failed.
  const std::string& doc_id() const { return doc_id_; }

 private:
  // OK, or AbandonAnswer's status when the errors do not fit in the answer.
  absl::Status FailEveryFunction(const absl::Status& why, std::string doc_id);
  // Past the answer's room: drops what was built for the document, RESOURCE_EXHAUSTED.
  absl::Status AbandonAnswer();

  std::vector<PyObject*> functions_;
  std::vector<std::string_view> names_;
  JsonBuffer rows_;
  std::vector<MapFailure> failures_;
  std::string doc_id_;
};

}  // namespace cnp::worker
