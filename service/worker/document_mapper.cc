#include "service/worker/document_mapper.h"

#include "absl/strings/str_cat.h"

#include "service/worker/call_context.h"
#include "service/worker/json_to_python.h"
#include "service/worker/map_call.h"
#include "service/worker/raised_log.h"
#include "service/worker/row_sink.h"

namespace cnp::worker {

absl::Status DocumentMapper::Map(std::string_view doc_json, std::string& buffer) {
  rows_.Clear();
  failures_.clear();
  doc_id_.clear();
  DocumentSeen seen;
  absl::StatusOr<PyRef> doc = ParseDocument(doc_json, buffer, seen);
  if (!doc.ok()) {
    if (!seen.refused_alone()) return doc.status();
    return FailEveryFunction(doc.status(), std::move(seen.id));
  }
  // A document is a JSON object, as CouchDB's always are (a Map call's are checked before they
  // come). Anything else reaches no function: a map function is any callable on the path, and
  // one that takes text (yaml.unsafe_load, bundled in an operator's package) must never be
  // handed a caller's text for a document.
  if (!PyDict_Check(doc->get())) {
    return FailEveryFunction(
        absl::InvalidArgumentError("a document is a JSON object, and this is not one"), "");
  }

  rows_.Put('[');
  for (size_t i = 0; i < functions_.size(); ++i) {
    if (i > 0) rows_.Put(',');
    // Each function gets the document as CouchDB sent it, whatever the one before did to its
    // dict (doc.pop("_attachments") in one view must not change another view's rows; couchjs
    // seals the document for the same reason): every function but the last gets a copy.
    PyRef given = i + 1 < functions_.size() ? PyRef::Steal(CopyParsed(doc->get())) : *doc;
    if (!given) {
      PyErr_Clear();
      Context().memory_error = true;
      return absl::ResourceExhaustedError("out of memory copying the document");
    }
    size_t mark = rows_.GetSize();
    RowSink rows(rows_);
    ScopedLogOrigin origin({"map", i < names_.size() ? names_[i] : std::string_view(), given.get()});
    const bool ran = RunMapFunction(functions_[i], given.get(), rows);
    // Past the answer's room nothing more is built, whether or not the function caught the
    // exception that told it so.
    if (Context().answer.exceeded()) [[unlikely]] return AbandonAnswer();
    if (ran) {
      rows.Finish();
      continue;
    }
    // Whatever the function emitted before it raised is dropped, as couchjs does.
    rows_.Pop(rows_.GetSize() - mark);
    rows_.Put('[');
    rows_.Put(']');
    failures_.push_back({i, TakeException(), Context().logs.size()});
    Context().eager_log_held = true;
    // Each error's text is part of the answer too (one big exception raised by every function
    // is as many copies).
    const UserException& raised = failures_.back().exception;
    LogRaised(raised);
    if (!Context().answer.Take(raised.type.size() + raised.message.size() + raised.where.size())) {
      return AbandonAnswer();
    }
  }
  rows_.Put(']');
  if (!failures_.empty()) {
    // As parsed: the last function was given the parsed dict itself, and may have changed it.
    doc_id_ = std::move(seen.id);
    if (!Context().answer.Take(doc_id_.size() * failures_.size())) return AbandonAnswer();
  }
  return absl::OkStatus();
}

absl::Status DocumentMapper::FailEveryFunction(const absl::Status& why, std::string doc_id) {
  rows_.Put('[');
  for (size_t i = 0; i < functions_.size(); ++i) {
    if (i > 0) rows_.Put(',');
    rows_.Put('[');
    rows_.Put(']');
    failures_.push_back(
        {i,
         UserException{"ValueError",
                       absl::StrCat("cnp does not give this document to Python: ", why.message()),
                       PyRef()},
         Context().logs.size()});
  }
  rows_.Put(']');
  doc_id_ = std::move(doc_id);
  // One error per function, each with the message and the document's _id.
  if (failures_.empty()) return absl::OkStatus();
  const UserException& raised = failures_.front().exception;
  if (!Context().answer.Take((raised.type.size() + raised.message.size() + doc_id_.size()) *
                             failures_.size())) {
    return AbandonAnswer();
  }
  return absl::OkStatus();
}

absl::Status DocumentMapper::AbandonAnswer() {
  PyErr_Clear();
  rows_.Clear();
  rows_.ShrinkToFit();
  failures_.clear();
  doc_id_.clear();
  return absl::ResourceExhaustedError(Context().answer.Message());
}

}  // namespace cnp::worker
