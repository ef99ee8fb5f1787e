#include "service/rpc/function_calls.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "service/common/log.h"
#include "service/metrics/service_metrics.h"
#include "service/rpc/status_mapping.h"

namespace cnp::rpc {
namespace {

using google::protobuf::internal::WireFormatLite;
using pool::Reply;
using pool::Task;

// A part's documents are cut at about this many bytes, so that the parts in flight hold a
// bounded share of a call with large documents.
constexpr int64_t kMaxTaskBytes = 4 << 20;
// The response is built in chunks of about this size: large enough to be mapped apart from the
// heap (and so returned to the system when freed), small enough not to be copied as it grows.
constexpr size_t kResponseChunkBytes = 4 << 20;

// At most this many lines a second about functions that raised: a broken view function over
// a large database raises on every document, and the counter already says how many.
constexpr int64_t kFunctionErrorLinesPerSecond = 20;

void LogFunctionError(const v1::FunctionError& e) {
  static std::atomic<int64_t> second{0};
  static std::atomic<int64_t> lines{0};
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  if (int64_t was = second.load(std::memory_order_relaxed); was != now &&
      second.compare_exchange_strong(was, now, std::memory_order_relaxed)) {
    lines.store(0, std::memory_order_relaxed);
  }
  if (lines.fetch_add(1, std::memory_order_relaxed) >= kFunctionErrorLinesPerSecond) return;
  LogEvent(LogLevel::kWarning, absl::StrCat("function raised ", e.type(), ": ", e.message()),
           {{"function", e.function()}, {"doc_id", e.doc_id()}, {"error", e.type()}});
}

// Counts, for cnp_function_errors_total, the documents or items on which a function raised,
// and logs them (a few a second).
void CountFunctionErrors(const Reply& reply) {
  auto count = [](const v1::FunctionError& e) {
    metrics::FunctionError(e.function());
    LogFunctionError(e);
  };
  switch (reply.kind_case()) {
    case Reply::kMap:
      for (const v1::MapResult& result : reply.map().results()) {
        for (const v1::FunctionError& e : result.errors()) count(e);
      }
      break;
    case Reply::kReduce:
      for (const v1::FunctionError& e : reply.reduce().errors()) count(e);
      break;
    case Reply::kValidate:
      if (reply.validate().has_error()) count(reply.validate().error());
      break;
    case Reply::kDesign:
      if (reply.design().has_error()) count(reply.design().error());
      break;
    default:
      break;
  }
}

// The reply of one task, checked: infrastructure errors and whole-task failures become
// statuses, and a reply of the wrong kind is a bug worth saying so.
absl::StatusOr<Reply> Checked(absl::StatusOr<Reply> reply, Reply::KindCase expected) {
  if (!reply.ok()) return reply.status();
  if (reply->has_failure()) return FailureToStatus(reply->failure());
  CountFunctionErrors(*reply);
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

// Reads a cnp.v1.MapRequest in its wire form without building it: function names and
// documents are taken in place, field by field.
class EncodedMapRequest {
 public:
  explicit EncodedMapRequest(std::string_view bytes)
      : bytes_(bytes),
        input_(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size())) {}

  // The next document, or nothing at the end or when the bytes are not a MapRequest (then
  // failed()). Function names met on the way are added to `functions`, when given.
  std::optional<std::string_view> Next(std::vector<std::string>* functions) {
    for (;;) {
      const uint32_t tag = input_.ReadTag();
      if (tag == 0) {
        failed_ = !input_.ConsumedEntireMessage();
        return std::nullopt;
      }
      const int field = WireFormatLite::GetTagFieldNumber(tag);
      const bool bytes_field =
          WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
      if (bytes_field && (field == v1::MapRequest::kFunctionsFieldNumber ||
                          field == v1::MapRequest::kDocsFieldNumber)) {
        uint32_t length = 0;
        const bool read = input_.ReadVarint32(&length);
        const int at = input_.CurrentPosition();
        if (!read || !input_.Skip(static_cast<int>(length))) break;
        std::string_view value = bytes_.substr(at, length);
        if (field == v1::MapRequest::kDocsFieldNumber) return value;
        if (!WireFormatLite::VerifyUtf8String(value.data(), static_cast<int>(value.size()),
                                              WireFormatLite::PARSE,
                                              "cnp.v1.MapRequest.functions")) {
          break;
        }
        if (functions != nullptr) functions->emplace_back(value);
      } else if (!WireFormatLite::SkipField(&input_, tag)) {
        break;
      }
    }
    failed_ = true;
    return std::nullopt;
  }
  bool failed() const { return failed_; }

 private:
  std::string_view bytes_;
  google::protobuf::io::CodedInputStream input_;
  bool failed_ = false;
};

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

absl::Status FunctionCalls::CheckDocCount(int64_t docs) const {
  if (docs <= options_.max_docs_per_call) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "the request holds ", docs, " documents, more than the ", options_.max_docs_per_call,
      " one call may carry; split the batch, or raise cnp-server's --max-docs-per-call"));
}

int64_t FunctionCalls::Parts(int64_t docs, int64_t bytes) const {
  // Split large batches so every worker gets a share, in more parts than workers so that a
  // worker that finishes early takes the next part; and very large ones into parts of bounded
  // size.
  int64_t parts = std::clamp<int64_t>(docs / std::max(1, options_.min_docs_per_task), 1,
                                      runner_.size() * 4);
  parts = std::max(parts, (docs + options_.max_docs_per_task - 1) /
                              std::max(1, options_.max_docs_per_task));
  parts = std::max(parts, (bytes + kMaxTaskBytes - 1) / kMaxTaskBytes);
  return std::clamp<int64_t>(parts, 1, std::max<int64_t>(docs, 1));
}

absl::Status FunctionCalls::MapEncoded(std::string_view request, absl::Time deadline,
                                       std::vector<std::string>& response) {
  // A first pass learns the function names and how many documents of how many bytes.
  std::vector<std::string> functions;
  int64_t docs = 0;
  int64_t doc_bytes = 0;
  {
    EncodedMapRequest scan(request);
    while (std::optional<std::string_view> doc = scan.Next(&functions)) {
      ++docs;
      doc_bytes += doc->size();
    }
    if (scan.failed()) {
      return absl::InvalidArgumentError("the request is not a valid cnp.v1.MapRequest");
    }
  }
  if (absl::Status s = RequireFunctions(functions.size()); !s.ok()) return s;
  if (absl::Status s = CheckDocCount(docs); !s.ok()) return s;
  deadline = EffectiveDeadline(deadline);

  // Then the parts, a wave of a few per worker at a time, each answer appended as it comes.
  const int64_t parts = Parts(docs, doc_bytes);
  const int64_t wave = std::max(1, runner_.size() * 4);
  EncodedMapRequest reader(request);
  int64_t response_bytes = 0;
  std::vector<Task> tasks;
  for (int64_t first = 0; first < parts; first += wave) {
    const int64_t last = std::min(parts, first + wave);
    tasks.clear();
    tasks.resize(last - first);
    for (int64_t p = first; p < last; ++p) {
      v1::MapRequest& part = *tasks[p - first].mutable_map();
      for (const std::string& f : functions) part.add_functions(f);
      const int64_t begin = docs * p / parts;
      const int64_t end = docs * (p + 1) / parts;
      part.mutable_docs()->Reserve(static_cast<int>(end - begin));
      for (int64_t d = begin; d < end; ++d) {
        std::optional<std::string_view> doc = reader.Next(nullptr);
        part.add_docs(doc->data(), doc->size());
      }
    }
    std::vector<absl::StatusOr<Reply>> replies = runner_.RunAll(tasks, deadline);
    for (absl::StatusOr<Reply>& r : replies) {
      absl::StatusOr<Reply> reply = Checked(std::move(r), Reply::kMap);
      // Never a partial result: a document silently missing from a batch is lost data.
      if (!reply.ok()) return reply.status();
      if (response.empty() || response.back().size() >= kResponseChunkBytes) response.emplace_back();
      const size_t before = response.back().size();
      reply->map().AppendToString(&response.back());
      response_bytes += response.back().size() - before;
      if (response_bytes > options_.max_call_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "the response to this call would be larger than the ", options_.max_call_bytes,
            " bytes a call may carry; split the batch, or raise cnp-server's --max-call-bytes"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status FunctionCalls::Map(v1::MapRequest& request, absl::Time deadline,
                                v1::MapResponse& response) {
  if (absl::Status s = RequireFunctions(request.functions_size()); !s.ok()) return s;
  if (absl::Status s = CheckDocCount(request.docs_size()); !s.ok()) return s;
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
