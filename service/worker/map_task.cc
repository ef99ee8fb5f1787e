#include "absl/strings/str_cat.h"
#include "service/worker/call_context.h"
#include "service/worker/document_mapper.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"

namespace cnp::worker {
namespace {

// Each document is parsed in `scratch` (json_to_python.h), never in the request itself: a
// document with a number rapidjson refuses is read again from its own bytes.
v1::Reply MapDocs(FunctionRegistry& registry, const cnp::v1::MapRequest& request,
                  std::string& scratch) {
  const google::protobuf::RepeatedPtrField<std::string>& functions = request.functions();
  Reply reply;
  std::vector<const LoadedFunction*> loaded;
  if (!LoadAll(registry, functions, loaded, reply)) return reply;
  std::vector<PyObject*> callables;
  for (const LoadedFunction* function : loaded) callables.push_back(function->callable.get());
  std::vector<std::string_view> names(functions.begin(), functions.end());

  DocumentMapper mapper(std::move(callables), std::move(names));
  cnp::v1::MapResponse* response = reply.mutable_map();
  for (int i = 0; i < request.docs_size(); ++i) {
    absl::Status mapped = mapper.Map(request.docs(i), scratch);
    // The document's rows join the answer: they must fit in what is left of it.
    if (mapped.ok() && !Context().answer.Take(mapper.rows().size())) {
      mapped = absl::ResourceExhaustedError(Context().answer.Message());
    }
    if (Context().answer.exceeded()) return AnswerTooLargeReply();
    if (!mapped.ok()) {
      Reply failed = FailureReply(
          absl::IsResourceExhausted(mapped) ? Failure::INTERNAL : Failure::BAD_INPUT,
          mapped.message());
      failed.mutable_failure()->set_document(int64_t{i} + 1);
      return failed;
    }
    cnp::v1::MapResult* result = response->add_results();
    result->set_rows(mapper.rows().data(), mapper.rows().size());
    for (const MapFailure& failure : mapper.failures()) {
      cnp::v1::FunctionError& error = *result->add_errors();
      FillFunctionError(error, functions.Get(failure.function_index), mapper.doc_id(),
                        failure.exception);
      error.set_logs_before(static_cast<int32_t>(failure.logs_before));
    }
    TakeLogs(*result->mutable_logs());
  }
  return reply;
}

}  // namespace

v1::Reply RunMap(FunctionRegistry& registry, const cnp::v1::MapRequest& request,
                 std::string& scratch) {
  return MapDocs(registry, request, scratch);
}

}  // namespace cnp::worker
