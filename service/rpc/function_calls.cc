#include "service/rpc/function_calls.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "service/rpc/status_mapping.h"

namespace cnp::rpc {
namespace {

using pool::Reply;
using pool::Task;

// The reply of one task, checked: infrastructure errors and whole-task failures become
// statuses, and a reply of the wrong kind is a bug worth saying so.
absl::StatusOr<Reply> Checked(absl::StatusOr<Reply> reply, Reply::KindCase expected) {
  if (!reply.ok()) return reply.status();
  if (reply->has_failure()) return FailureToStatus(reply->failure());
  if (reply->kind_case() != expected) {
    return absl::InternalError(absl::StrCat("the worker answered with reply kind ",
                                            reply->kind_case(), " instead of ", expected));
  }
  return reply;
}

absl::Status RequireFunctions(int count) {
  if (count == 0) return absl::InvalidArgumentError("the request names no function");
  return absl::OkStatus();
}

}  // namespace

template <class Request, class Response>
absl::Status FunctionCalls::RunOne(Request& request, Request* (Task::*slot)(),
                                   Response* (Reply::*answer)(), Reply::KindCase kind,
                                   absl::Time deadline, Response& response) {
  Task task;
  (task.*slot)()->Swap(&request);
  absl::StatusOr<Reply> reply = Checked(runner_.Run(task, EffectiveDeadline(deadline)), kind);
  if (!reply.ok()) return reply.status();
  response.Swap(((*reply).*answer)());
  return absl::OkStatus();
}

absl::Status FunctionCalls::Map(v1::MapRequest& request, absl::Time deadline,
                                v1::MapResponse& response) {
  if (absl::Status s = RequireFunctions(request.functions_size()); !s.ok()) return s;
  deadline = EffectiveDeadline(deadline);
  const int docs = request.docs_size();
  // Split large batches so every worker gets a share, in more parts than workers so that a
  // worker that finishes early takes the next part.
  const int parts = std::clamp(docs / std::max(1, options_.min_docs_per_task), 1,
                               runner_.size() * 4);
  if (parts == 1) {
    Task task;
    task.mutable_map()->Swap(&request);
    absl::StatusOr<Reply> reply = Checked(runner_.Run(task, deadline), Reply::kMap);
    if (!reply.ok()) return reply.status();
    response = std::move(*reply->mutable_map());
    return absl::OkStatus();
  }
  std::vector<Task> tasks(parts);
  for (int p = 0; p < parts; ++p) {
    v1::MapRequest& part = *tasks[p].mutable_map();
    *part.mutable_functions() = request.functions();
    const int begin = static_cast<int>(int64_t{docs} * p / parts);
    const int end = static_cast<int>(int64_t{docs} * (p + 1) / parts);
    part.mutable_docs()->Reserve(end - begin);
    for (int d = begin; d < end; ++d) part.add_docs(std::move(*request.mutable_docs(d)));
  }
  std::vector<absl::StatusOr<Reply>> replies = runner_.RunAll(tasks, deadline);
  response.mutable_results()->Reserve(docs);
  for (absl::StatusOr<Reply>& r : replies) {
    absl::StatusOr<Reply> reply = Checked(std::move(r), Reply::kMap);
    // Never a partial result: a document silently missing from a batch is lost data.
    if (!reply.ok()) return reply.status();
    for (v1::MapResult& result : *reply->mutable_map()->mutable_results()) {
      *response.add_results() = std::move(result);
    }
  }
  return absl::OkStatus();
}

absl::Status FunctionCalls::Reduce(v1::ReduceRequest& request, absl::Time deadline,
                                   v1::ReduceResponse& response) {
  if (absl::Status s = RequireFunctions(request.functions_size()); !s.ok()) return s;
  return RunOne(request, &Task::mutable_reduce, &Reply::mutable_reduce, Reply::kReduce, deadline,
                response);
}

absl::Status FunctionCalls::Validate(v1::ValidateRequest& request, absl::Time deadline,
                                     v1::ValidateResponse& response) {
  if (request.function().empty()) return absl::InvalidArgumentError("the request names no function");
  return RunOne(request, &Task::mutable_validate, &Reply::mutable_validate, Reply::kValidate,
                deadline, response);
}

absl::Status FunctionCalls::CallDesignFunction(v1::DesignFunctionRequest& request,
                                               absl::Time deadline,
                                               v1::DesignFunctionResponse& response) {
  if (request.function().empty()) return absl::InvalidArgumentError("the request names no function");
  if (request.kind() == v1::DESIGN_FUNCTION_KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError("the request does not say which kind of design function");
  }
  return RunOne(request, &Task::mutable_design, &Reply::mutable_design, Reply::kDesign, deadline,
                response);
}

absl::Status FunctionCalls::Resolve(v1::ResolveRequest& request, absl::Time deadline,
                                    v1::ResolveResponse& response) {
  if (absl::Status s = RequireFunctions(request.functions_size()); !s.ok()) return s;
  return RunOne(request, &Task::mutable_resolve, &Reply::mutable_resolve, Reply::kResolve,
                deadline, response);
}

}  // namespace cnp::rpc
