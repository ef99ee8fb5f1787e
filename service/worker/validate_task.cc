#include <iterator>

#include "absl/strings/str_cat.h"
#include "service/worker/accepted_arguments.h"
#include "service/worker/call_context.h"
#include "service/worker/json_to_python.h"
#include "service/worker/py_text.h"
#include "service/worker/raised_log.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"
#include "service/worker/unrun_body.h"

namespace cnp::worker {
namespace {

using cnp::v1::ValidateResponse;

// The package's rejection classes (ForbiddenError and UnauthorizedError are the same classes),
// and NotFound.
struct RejectionClasses {
  PyRef forbidden;
  PyRef unauthorized;
  PyRef not_found;
};

const RejectionClasses& Rejections() {
  static const RejectionClasses classes = [] {
    RejectionClasses found;
    PyRef errors = PyRef::Steal(PyImport_ImportModule("couch_named_python.errors"));
    if (errors) {
      found.forbidden = PyRef::Steal(PyObject_GetAttrString(errors.get(), "Forbidden"));
      found.unauthorized = PyRef::Steal(PyObject_GetAttrString(errors.get(), "Unauthorized"));
      found.not_found = PyRef::Steal(PyObject_GetAttrString(errors.get(), "NotFound"));
    }
    PyErr_Clear();
    return found;
  }();
  return classes;
}

bool IsInstance(PyObject* value, const PyRef& cls) {
  if (!cls) return false;
  const int is = PyObject_IsInstance(value, cls.get());
  // An exception whose __class__ raises is no rejection; what it raised must not stay set for
  // the next task (another caller's) to fail on.
  if (is < 0) PyErr_Clear();
  return is == 1;
}

// A rejection raised with one value that is not a str (Forbidden({"field": "title"})): that
// value as JSON text, as couchjs sends a thrown {forbidden: value}. Empty otherwise, and for a
// value JSON cannot carry (its str() is the message then).
std::string RejectionJson(PyObject* exception) {
  PyRef args = PyRef::Steal(PyObject_GetAttrString(exception, "args"));
  if (!args || !PyTuple_Check(args.get()) || PyTuple_GET_SIZE(args.get()) != 1 ||
      PyUnicode_Check(PyTuple_GET_ITEM(args.get(), 0))) {
    PyErr_Clear();
    return {};
  }
  std::optional<std::string> json = ToJson(PyTuple_GET_ITEM(args.get(), 0));
  if (!json.has_value()) PyErr_Clear();
  return json.value_or(std::string());
}

}  // namespace

v1::Reply RunValidate(FunctionRegistry& registry, const cnp::v1::ValidateRequest& request) {
  absl::StatusOr<const LoadedFunction*> function = registry.Load(request.function());
  if (!function.ok()) return LoadFailureReply(function.status(), request.function());

  absl::StatusOr<PyRef> new_doc = ParseJson(request.new_doc());
  absl::StatusOr<PyRef> old_doc = ParseOptionalJson(request.old_doc(), WhenEmpty::kNone);
  absl::StatusOr<PyRef> user_ctx = ParseOptionalJson(request.user_ctx(), WhenEmpty::kNone);
  absl::StatusOr<PyRef> sec_obj = ParseOptionalJson(request.sec_obj(), WhenEmpty::kEmptyDict);
  for (auto [field, parsed] : {std::pair{"new_doc", &new_doc}, std::pair{"old_doc", &old_doc},
                               std::pair{"user_ctx", &user_ctx}, std::pair{"sec_obj", &sec_obj}}) {
    if (!parsed->ok()) {
      return FailureReply(Failure::BAD_INPUT,
                          absl::StrCat(field, ": ", parsed->status().message()), request.function());
    }
    // Objects, as CouchDB passes them (all but new_doc may be null: old_doc and user_ctx are,
    // for a new document or no user): a validator is any callable on the path, and one that
    // takes text must never be handed the caller's.
    PyObject* value = (*parsed)->get();
    const bool may_be_null = field != std::string_view("new_doc");
    if (!PyDict_Check(value) && !(may_be_null && value == Py_None)) {
      return FailureReply(Failure::BAD_INPUT,
                          absl::StrCat(field, ": must be a JSON object",
                                       may_be_null ? " or null" : "", ", not ",
                                       JsonTypeName(value)),
                          request.function());
    }
  }

  Reply reply;
  ValidateResponse* response = reply.mutable_validate();
  ScopedLogOrigin origin({"validate", request.function(), new_doc->get()});
  // (new, old, userctx) and (new, old) validators, from before CouchDB passed secobj, get
  // what they declare.
  PyObject* const arguments[] = {new_doc->get(), old_doc->get(), user_ctx->get(), sec_obj->get()};
  PyRef result = PyRef::Steal(
      CallWithAcceptedArguments((*function)->callable.get(), arguments, std::size(arguments)));
  // A `yield` left in a validator (one written as a map function, say): calling it ran none
  // of its body, so nothing it would have raised was raised, and every document passed. It
  // is an error instead, as CouchDB reports a validator that throws.
  RefuseUnrunBody(result, request.function(), "validated nothing",
                  "a validate_doc_update function returns to accept a document and raises "
                  "Forbidden or Unauthorized to refuse it");
  if (result) {
    response->set_outcome(ValidateResponse::OK);
  } else {
    UserException exception = TakeException();
    if (IsInstance(exception.value.get(), Rejections().forbidden)) {
      response->set_outcome(ValidateResponse::FORBIDDEN);
      response->set_message(exception.message);
      response->set_message_json(RejectionJson(exception.value.get()));
    } else if (IsInstance(exception.value.get(), Rejections().unauthorized)) {
      response->set_outcome(ValidateResponse::UNAUTHORIZED);
      response->set_message(exception.message);
      response->set_message_json(RejectionJson(exception.value.get()));
    } else if (IsInstance(exception.value.get(), Rejections().not_found)) {
      // couchjs's validate answers a thrown ["error","not_found",msg] as that line, which
      // CouchDB makes a 404, as from any other design function (_runtime.py): a signal, not
      // an error of the function's, so not logged as one.
      response->set_outcome(ValidateResponse::NOT_FOUND);
      response->set_message(exception.message.empty() ? "document not found" : exception.message);
    } else {
      std::string doc_id =
          PyDict_Check(new_doc->get()) ? Utf8Text(PyDict_GetItemString(new_doc->get(), "_id")) : "";
      response->set_outcome(ValidateResponse::ERROR);
      response->set_message(exception.Summary());
      FillFunctionError(*response->mutable_error(), request.function(), doc_id, exception);
      LogRaised(exception);
    }
  }
  TakeLogs(*response->mutable_logs());
  return reply;
}

}  // namespace cnp::worker
