#include "absl/strings/str_cat.h"
#include "service/worker/call_context.h"
#include "service/worker/document_mapper.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"

namespace cnp::worker {

v1::Reply RunMap(FunctionRegistry& registry, cnp::v1::MapRequest& request) {
  Reply reply;
  std::vector<const LoadedFunction*> loaded;
  if (!LoadAll(registry, request.functions(), loaded, reply)) return reply;
  std::vector<PyObject*> callables;
  for (const LoadedFunction* function : loaded) callables.push_back(function->callable.get());

  DocumentMapper mapper(std::move(callables));
  cnp::v1::MapResponse* response = reply.mutable_map();
  for (int i = 0; i < request.docs_size(); ++i) {
    if (absl::Status s = mapper.Map(*request.mutable_docs(i)); !s.ok()) {
      return FailureReply(absl::IsResourceExhausted(s) ? Failure::INTERNAL : Failure::BAD_INPUT,
                          absl::StrCat("document ", i, ": ", s.message()));
    }
    cnp::v1::MapResult* result = response->add_results();
    result->set_rows(mapper.rows().data(), mapper.rows().size());
    for (const MapFailure& failure : mapper.failures()) {
      FillFunctionError(*result->add_errors(), request.functions(failure.function_index),
                        mapper.doc_id(), failure.exception);
    }
    TakeLogs(*result->mutable_logs());
  }
  return reply;
}

}  // namespace cnp::worker
