#include "service/calls/function_calls.h"

#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "asio/this_coro.hpp"
#include "common/call_limit.h"
#include "common/retry_advice.h"
#include "rapidjson/reader.h"
#include "service/calls/encoded_map_request.h"
#include "service/calls/failure_status.h"
#include "service/common/function_errors.h"
#include "service/common/function_log.h"
#include "service/common/log.h"
#include "service/common/protobuf_log.h"
#include "service/metrics/service_metrics.h"
#include "service/pool/task_description.h"

namespace cnp::calls {
namespace {

// The worker checks the same bound (function_errors.h says it is the worker's).
static_assert(kMaxFunctionNameBytes == kMaxProgressNameBytes);

using pool::Reply;
using pool::Task;

// A part's documents are cut at about this many bytes, so that the parts in flight hold a
// bounded share of a call with large documents.
constexpr int64_t kMaxTaskBytes = 4 << 20;
// The response is built in chunks of about this size: large enough to be mapped apart from the
// heap (and so returned to the system when freed), small enough not to be copied as it grows.
constexpr size_t kResponseChunkBytes = 4 << 20;

// Asked before every co_await on the pool, so that a cancelled call starts nothing new. (Every
// call's coroutine runs with throw_if_cancelled(false), set by its RPC's coroutine: an await
// after the cancellation would not throw, it would start work no one waits for.) The state is
// fetched once per call, into a variable.
bool IsCancelled(const asio::cancellation_state& state) {
  return state.cancelled() != asio::cancellation_type::none;
}

absl::Status CancelledStatus() {
  return absl::CancelledError("the call was cancelled by its client before it finished");
}

// A response a call may not carry: refused here in words rather than failing its write, which
// the client would see as a call cancelled; and marked, for a client that splits the call.
// A batch (Map, Reduce) can be split; one function's single answer (a validate, a show, an
// update...) cannot.
absl::Status ResponseTooLarge(int64_t max_call_bytes, Reply::KindCase kind = Reply::kMap) {
  const bool batch = kind == Reply::kMap || kind == Reply::kReduce;
  return WithCallLimit(
      absl::ResourceExhaustedError(absl::StrCat(
          "the response to this call would be larger than the ", max_call_bytes,
          " bytes a call may carry; ",
          batch ? "split the batch" : "make the function answer less",
          ", or raise cnp-server's --max-call-bytes")),
      {CallLimit::Kind::kAnswer, max_call_bytes});
}

// The reply of one task, checked: infrastructure errors and whole-task failures become
// statuses, and a reply of the wrong kind is a bug worth saying so. `first_document`: the index
// in the call of the task's first document (a Map call runs in parts).
absl::StatusOr<Reply> Checked(absl::StatusOr<Reply> reply, Reply::KindCase expected,
                              int64_t max_call_bytes, int64_t first_document = 0) {
  if (!reply.ok()) {
    // The pool marks a reply refused for its length with what was left of the call's bytes for
    // that part; what the caller can act on is the call's limit (the message stays the pool's).
    if (std::optional<CallLimit> limit = CallLimitOf(reply.status());
        limit.has_value() && limit->kind == CallLimit::Kind::kAnswer) {
      return WithCallLimit(reply.status(), {CallLimit::Kind::kAnswer, max_call_bytes});
    }
    return reply.status();
  }
  // Lines logged before a whole-task failure count too. Here, on the call's own coroutine, the
  // log scope names its RPC and peer.
  LogFunctionLines(reply->function_logs());
  // Before the failures: a module that raised when imported fails the task, and counts.
  CountFunctionErrors(*reply, metrics::CountFunctionError);
  // The worker stopped at the part's share of the call's bytes: what the caller can act on is
  // the call's limit.
  if (reply->failure().code() == worker::v1::Failure::ANSWER_TOO_LARGE) {
    return ResponseTooLarge(max_call_bytes, expected);
  }
  if (reply->has_failure()) return FailureToStatus(reply->failure(), first_document);
  if (reply->kind_case() != expected) {
    return absl::InternalError(absl::StrCat("the worker answered with reply kind ",
                                            reply->kind_case(), " instead of ", expected));
  }
  return reply;
}

// A part that failed (its worker crashed, its deadline passed) names its documents among the
// call's: the pool describes only the part it ran ("Map of f on 1250 documents"), and a caller
// looking for the document at fault needs where.
absl::Status InPart(const absl::Status& status, int64_t begin, int64_t end, int64_t docs) {
  if (status.ok() || (begin == 0 && end == docs)) return status;
  absl::Status named(status.code(), absl::StrCat("documents ", begin + 1, "-", end, " of the call's ",
                                                 docs, ": ", status.message()));
  status.ForEachPayload([&named](absl::string_view url, const absl::Cord& payload) {
    named.SetPayload(url, payload);
  });
  return named;
}

// What each of `parts` parts run at once may answer of the `left` bytes of a call: their replies
// are all held until the last one comes, so with each allowed all that is left, one call held
// up to 4 x workers times --max-call-bytes (a security review measured 714 MiB for one 64 MiB
// call on 2 workers). A part whose answer is over its share, while the call's is not, is run
// again alone with all that is left (OverItsShare): an uneven call costs a part run twice, never
// a refusal under the limit.
int64_t ShareOf(int64_t left, int64_t parts) { return std::max<int64_t>(1, left / parts); }

// Which of a batch's parts the pool failed, if it failed one: the first that failed itself,
// rather than one the batch did not run or stopped waiting for because another failed
// (pool::WasNotRunInBatch), whose documents are not at fault.
std::optional<size_t> FailedPart(const std::vector<absl::StatusOr<Reply>>& replies) {
  std::optional<size_t> not_run;
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].ok()) continue;
    if (!pool::WasNotRunInBatch(replies[i].status())) return i;
    if (!not_run.has_value()) not_run = i;
  }
  return not_run;
}

// The call's status when the pool failed its part `p` of `parts` (`docs` documents in all):
// named by the part's documents, unless the part was only not run (the batch stopped for no
// part's fault: no worker, the deadline).
absl::Status PartFailure(absl::Status status, int64_t p, int64_t parts, int64_t docs,
                         int64_t max_call_bytes) {
  const bool not_run = pool::WasNotRunInBatch(status);
  status.ErasePayload(pool::kNotRunInBatchPayload);
  const int64_t begin = docs * p / parts;
  absl::Status checked =
      Checked(absl::StatusOr<Reply>(std::move(status)), Reply::kMap, max_call_bytes, begin)
          .status();
  if (not_run) return checked;
  return InPart(checked, begin, docs * (p + 1) / parts, docs);
}

bool OverItsShare(const absl::StatusOr<Reply>& reply) {
  return reply.ok() && reply->failure().code() == worker::v1::Failure::ANSWER_TOO_LARGE;
}

// The "_id" of a request's one document, read from its JSON only as far as that member
// (CouchDB writes it first): the root object's (`in_array` false: a Validate's new_doc), or
// that of the first element of a JSON array when it is an object (a show's or an update's args).
// Empty when there is none or it is not a string.
class DocIdReader : public rapidjson::BaseReaderHandler<rapidjson::UTF8<>, DocIdReader> {
 public:
  explicit DocIdReader(bool in_array) : in_array_(in_array), doc_depth_(in_array ? 2 : 1) {}

  bool Null() { return Value(false); }
  bool Bool(bool) { return Value(false); }
  bool Int(int) { return Value(false); }
  bool Uint(unsigned) { return Value(false); }
  bool Int64(int64_t) { return Value(false); }
  bool Uint64(uint64_t) { return Value(false); }
  bool Double(double) { return Value(false); }
  bool RawNumber(const char*, rapidjson::SizeType, bool) { return Value(false); }
  bool String(const char* text, rapidjson::SizeType length, bool) {
    if (depth_ == doc_depth_ && key_is_id_) {
      id_.assign(text, length);
      return false;  // found: read no further
    }
    return Value(false);
  }
  bool Key(const char* text, rapidjson::SizeType length, bool) {
    if (depth_ == doc_depth_) key_is_id_ = absl::string_view(text, length) == "_id";
    return true;
  }
  bool StartObject() {
    if (!Value(true)) return false;
    ++depth_;
    return true;
  }
  bool EndObject(rapidjson::SizeType) {
    --depth_;
    return depth_ >= doc_depth_;  // the document ended without one: read no further
  }
  bool StartArray() {
    if (!Value(false)) return false;
    ++depth_;
    return true;
  }
  bool EndArray(rapidjson::SizeType) {
    --depth_;
    return true;
  }

  const std::string& id() const { return id_; }

 private:
  // A value begins at depth_: false stops the reading (no document, or an _id not a string).
  bool Value(bool object) {
    if (in_array_ && depth_ == 1) {
      if (first_seen_ || !object) return false;
      first_seen_ = true;
    }
    return !(depth_ == doc_depth_ && key_is_id_);
  }

  const bool in_array_;
  const int doc_depth_;
  int depth_ = 0;
  bool first_seen_ = false;
  bool key_is_id_ = false;
  std::string id_;
};

std::string DocIdOf(const std::string& json, bool in_array) {
  DocIdReader reader(in_array);
  rapidjson::Reader parse;
  rapidjson::StringStream in(json.c_str());
  // Without recursion: the request is not read yet by anything that bounds its nesting, and a
  // recursive parse of "[[[[..." overflows this thread's stack. Stopped early on purpose, or
  // not JSON: either way, what it found.
  parse.Parse<rapidjson::kParseIterativeFlag>(in, reader);
  return reader.id();
}

// A request's one document, for the log line of a call the pool failed: a Validate's, a show's
// or an update's (the others carry none, or several).
std::string DocIdOfTask(const Task& task) {
  if (task.has_validate()) return DocIdOf(task.validate().new_doc(), /*in_array=*/false);
  if (task.has_design() && (task.design().kind() == v1::SHOW ||
                            task.design().kind() == v1::UPDATE)) {
    return DocIdOf(task.design().args(), /*in_array=*/true);
  }
  return std::string();
}

// The call's own line when the pool failed it: its worker crashed (UNAVAILABLE, marked not to
// be retried), its deadline passed (queued or running), or it was cancelled while it ran. Logged
// here, on the call's coroutine, the line carries the call's `rpc` and `peer` (the pool's own
// line, written on the pool's thread, cannot); `function` and, for a request about one
// document, `doc_id`, say what ran.
void LogPoolFailure(const absl::Status& status, absl::string_view function,
                    absl::string_view doc_id) {
  LogLevel level;
  if (absl::IsUnavailable(status) && IsNotRetryable(status)) {
    level = LogLevel::kError;
  } else if (absl::IsDeadlineExceeded(status)) {
    level = LogLevel::kWarning;
  } else if (absl::IsCancelled(status)) {
    level = LogLevel::kInfo;
  } else {
    return;
  }
  const std::string code = absl::StatusCodeToString(status.code());
  LogEvent(level, absl::StrCat("call failed: ", status.message()),
           {{"function", function}, {"doc_id", doc_id}, {"code", code}});
}

// A Map's functions as a log line's `function` field names them (pool::TaskFunctions).
std::string MapFunctions(const std::vector<std::string>& functions) {
  Task named;
  for (const std::string& f : functions) named.mutable_map()->add_functions(f);
  return pool::TaskFunctions(named);
}

absl::Status RequireFunctions(int64_t count) {
  if (count == 0) return absl::InvalidArgumentError("the request names no function");
  return absl::OkStatus();
}

// The names of a Map or a Reduce: some, at most kMaxFunctionsPerCall, none longer than a
// worker accepts. Each part of a Map carries every name again, so both bounds together bound
// what the parts in flight hold of them (4,096 x 512 bytes a part); a longer name would fail
// on the worker anyway, in the same words.
template <class Names>
absl::Status CheckFunctions(const Names& names) {
  if (absl::Status s = RequireFunctions(names.size()); !s.ok()) return s;
  if (static_cast<int64_t>(names.size()) > kMaxFunctionsPerCall) return TooManyFunctions();
  int64_t index = 0;
  for (const std::string& name : names) {
    if (name.size() > kMaxFunctionNameBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "function ", index, " of the request: ValueError: function name too long: ",
          name.size(), " bytes, at most ", kMaxFunctionNameBytes, " allowed"));
    }
    ++index;
  }
  return absl::OkStatus();
}

// Whether `json` can be a JSON object: its first byte past JSON's whitespace opens one. The
// worker parses it, and says so if it is not JSON after all; a number or an array that is
// (`5`, `[1,2]`) would reach the function, which expects a document.
bool OpensAnObject(std::string_view json) {
  const size_t first = json.find_first_not_of(" \t\n\r");
  return first != std::string_view::npos && json[first] == '{';
}

// `json` is null, surrounding whitespace aside.
bool IsNull(std::string_view json) {
  const size_t first = json.find_first_not_of(" \t\n\r");
  const size_t last = json.find_last_not_of(" \t\n\r");
  return first != std::string_view::npos && json.substr(first, last - first + 1) == "null";
}

// The first bytes of a document, for a message: printable ASCII as it is, any other byte
// escaped (documents are bytes; a status message is text).
std::string StartOf(std::string_view json) {
  constexpr size_t kShown = 40;
  std::string shown;
  for (size_t i = 0; i < json.size() && i < kShown; ++i) {
    const unsigned char c = static_cast<unsigned char>(json[i]);
    if (c >= 0x20 && c < 0x7f) {
      shown.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&shown, "\\x", absl::Hex(c, absl::kZeroPad2));
    }
  }
  if (json.size() > kShown) shown += "...";
  return shown;
}

// A Map's document that is no JSON object, named by its index in the call (from 0, as a
// worker's failure names one): the API says each is one, as CouchDB's always are. (CouchDB's
// own path, a Session, passes what CouchDB sends, as couchjs does.)
absl::Status NotAnObject(int64_t index, std::string_view doc) {
  return absl::InvalidArgumentError(
      absl::StrCat("document ", index, " is not a JSON object: ", StartOf(doc),
                   " (each document of a Map is one)"));
}

}  // namespace

// More names than a call may carry, marked for the client as its other size limits are. (A Map's
// request is read only up to the name past the limit: the count is not known.)
absl::Status TooManyFunctions() {
  return WithCallLimit(
      absl::ResourceExhaustedError(absl::StrCat(
          "the request names more than the ", kMaxFunctionsPerCall,
          " functions one call may name; split them over several calls")),
      {CallLimit::Kind::kFunctions, kMaxFunctionsPerCall});
}

template <class Request, class Response>
asio::awaitable<absl::Status> FunctionCalls::RunOne(Request& request, Request* (Task::*slot)(),
                                                    Response* (Reply::*answer)(),
                                                    Reply::KindCase kind, absl::Time deadline,
                                                    Response& response) {
  Task task;
  (task.*slot)()->Swap(&request);
  task.set_max_answer_bytes(options_.max_call_bytes);
  // For the log line of a call the pool fails (the task is the pool's once sent).
  const std::string function = pool::TaskFunctions(task);
  const std::string doc_id = DocIdOfTask(task);
  absl::StatusOr<Reply> ran = co_await runner_.Run(std::move(task), EffectiveDeadline(deadline));
  if (!ran.ok()) {
    LogPoolFailure(ran.status(), function, doc_id);
    ran = WithDeadlineNote(ran.status());
  }
  absl::StatusOr<Reply> reply = Checked(std::move(ran), kind, options_.max_call_bytes);
  if (!reply.ok()) co_return reply.status();
  response.Swap(((*reply).*answer)());
  co_return absl::OkStatus();
}

absl::Status FunctionCalls::WithDeadlineNote(absl::Status status) const {
  if (!absl::IsDeadlineExceeded(status)) return status;
  return absl::DeadlineExceededError(absl::StrCat(
      status.message(), " (the call's deadline: the client's, or cnp-server's --call-timeout, ",
      absl::FormatDuration(options_.call_timeout), ", whichever came first)"));
}

absl::Status FunctionCalls::CheckDocCount(int64_t docs) const {
  if (docs <= options_.max_docs_per_call) return absl::OkStatus();
  return WithCallLimit(
      absl::ResourceExhaustedError(absl::StrCat(
          "the request holds ", docs, " documents, more than the ", options_.max_docs_per_call,
          " one call may carry; split the batch, or raise cnp-server's --max-docs-per-call")),
      {CallLimit::Kind::kDocuments, options_.max_docs_per_call});
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

asio::awaitable<absl::Status> FunctionCalls::MapEncoded(std::string_view request,
                                                        absl::Time deadline,
                                                        std::vector<std::string>& response,
                                                        AnswerGrowth grown,
                                                        std::string_view rpc) {
  const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
  // A first pass learns the function names (it stops at a name past the limit) and how many
  // documents of how many bytes, and finds the first that is no JSON object.
  std::vector<std::string> functions;
  int64_t docs = 0;
  int64_t doc_bytes = 0;
  std::optional<int64_t> not_an_object;
  std::string_view not_an_object_doc;
  {
    // What protobuf says of a bad function name goes into the answer, not the log; the scan
    // does not suspend, so no other call's lines are taken.
    ProtobufLogCapture protobuf_said;
    EncodedMapRequest scan(request, kMaxFunctionsPerCall);
    while (std::optional<std::string_view> doc = scan.Next(&functions)) {
      if (!not_an_object.has_value() && !OpensAnObject(*doc)) {
        not_an_object = docs;
        not_an_object_doc = *doc;
      }
      ++docs;
      doc_bytes += doc->size();
    }
    if (scan.too_many_functions()) co_return TooManyFunctions();
    if (scan.failed()) {
      co_return absl::InvalidArgumentError(absl::StrCat(
          "the ", absl::string_view(rpc.data(), rpc.size()),
          " request is not a valid cnp.v1.MapRequest: ", protobuf_said.Reason()));
    }
  }
  if (absl::Status s = CheckFunctions(functions); !s.ok()) co_return s;
  if (absl::Status s = CheckDocCount(docs); !s.ok()) co_return s;
  if (not_an_object.has_value()) co_return NotAnObject(*not_an_object, not_an_object_doc);
  deadline = EffectiveDeadline(deadline);

  // Then the parts, a wave of a few per worker at a time, each answer appended as it comes.
  const int64_t parts = Parts(docs, doc_bytes);
  const int64_t wave = std::max(1, runner_.size() * 4);
  // A call of several waves whose answer is counted as it grows starts with one part per
  // worker: nothing yet says how much it answers per document, and a wave's replies are all
  // held before they are counted.
  const int64_t first_wave =
      grown && parts > wave ? std::max(1, runner_.size()) : wave;
  EncodedMapRequest reader(request);
  int64_t response_bytes = 0;
  // Never a partial result: a document silently missing from a batch is lost data.
  auto fail = [&response](absl::Status status) {
    response.clear();
    return status;
  };
  // Part p's task: its documents taken from `from`, which stands at its first one. A part that
  // must run again alone reads them from a reader of its own.
  auto part_task = [&](EncodedMapRequest& from, int64_t p, int64_t max_answer_bytes) {
    Task task;
    // A part that would answer more than it may is stopped by its worker, not read here.
    task.set_max_answer_bytes(max_answer_bytes);
    v1::MapRequest& part = *task.mutable_map();
    for (const std::string& f : functions) part.add_functions(f);
    const int64_t begin = docs * p / parts;
    const int64_t end = docs * (p + 1) / parts;
    part.mutable_docs()->Reserve(static_cast<int>(end - begin));
    for (int64_t d = begin; d < end; ++d) {
      std::optional<std::string_view> doc = from.Next(nullptr);
      part.add_docs(doc->data(), doc->size());
    }
    return task;
  };
  std::vector<Task> tasks;
  for (int64_t first = 0, last = 0; first < parts; first = last) {
    // A cancelled call starts no further wave: its remaining documents never reach a worker.
    if (IsCancelled(cancellation)) co_return fail(CancelledStatus());
    last = std::min(parts, first + (first == 0 ? first_wave : wave));
    const int64_t share = ShareOf(options_.max_call_bytes - response_bytes, last - first);
    // The wave's answer is counted before it runs, as the waves before it answered per
    // document (the first is counted as it comes in): the parts' replies are all held at once
    // before they are appended.
    // Never more than a call may answer: an answer past that fails the call anyway, and a
    // first wave that answered more per document than the rest must not refuse a call that
    // fits. Held until the wave is in: its replies are all in memory until then.
    const int64_t docs_done = docs * first / parts;
    int64_t expected = 0;
    if (grown && docs_done > 0) {
      const int64_t wave_docs = docs * last / parts - docs_done;
      expected = std::min(
          options_.max_call_bytes,
          response_bytes + static_cast<int64_t>(static_cast<double>(response_bytes) *
                                                static_cast<double>(wave_docs) /
                                                static_cast<double>(docs_done)));
      if (absl::Status held = grown(expected); !held.ok()) co_return fail(held);
    }
    tasks.clear();
    for (int64_t p = first; p < last; ++p) tasks.push_back(part_task(reader, p, share));
    std::vector<absl::StatusOr<Reply>> replies =
        co_await runner_.RunAll(std::move(tasks), deadline);
    // A part the pool failed (its worker crashed, the deadline passed) fails the call; the pool
    // stopped the batch there, and answered without waiting for the other parts.
    if (std::optional<size_t> failed = FailedPart(replies)) {
      absl::Status status = PartFailure(replies[*failed].status(),
                                        first + static_cast<int64_t>(*failed), parts, docs,
                                        options_.max_call_bytes);
      LogPoolFailure(status, MapFunctions(functions), "");
      co_return fail(WithDeadlineNote(std::move(status)));
    }
    for (size_t i = 0; i < replies.size(); ++i) {
      const int64_t left = options_.max_call_bytes - response_bytes;
      const int64_t p = first + static_cast<int64_t>(i);
      if (OverItsShare(replies[i]) && share < left) {
        if (IsCancelled(cancellation)) co_return fail(CancelledStatus());
        EncodedMapRequest again(request);
        for (int64_t d = 0; d < docs * p / parts; ++d) again.Next(nullptr);
        Task alone = part_task(again, p, left);
        replies[i] = co_await runner_.Run(std::move(alone), deadline);
      }
      const bool part_failed = !replies[i].ok();  // not a function's failure, which is the call's
      absl::StatusOr<Reply> reply =
          Checked(std::move(replies[i]), Reply::kMap, options_.max_call_bytes, docs * p / parts);
      if (!reply.ok()) {
        if (!part_failed) co_return fail(reply.status());
        absl::Status failed =
            InPart(reply.status(), docs * p / parts, docs * (p + 1) / parts, docs);
        LogPoolFailure(failed, MapFunctions(functions), "");
        co_return fail(WithDeadlineNote(std::move(failed)));
      }
      if (response.empty() || response.back().size() >= kResponseChunkBytes) {
        response.emplace_back();
      }
      const size_t before = response.back().size();
      reply->map().AppendToString(&response.back());
      response_bytes += response.back().size() - before;
      if (response_bytes > options_.max_call_bytes) {
        co_return fail(ResponseTooLarge(options_.max_call_bytes));
      }
      if (grown) {
        if (absl::Status held = grown(std::max(response_bytes, expected)); !held.ok()) {
          co_return fail(held);
        }
      }
    }
  }
  co_return absl::OkStatus();
}

asio::awaitable<absl::Status> FunctionCalls::Reduce(v1::ReduceRequest& request,
                                                    absl::Time deadline,
                                                    v1::ReduceResponse& response) {
  const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
  if (absl::Status s = CheckFunctions(request.functions()); !s.ok()) co_return s;
  if (IsCancelled(cancellation)) co_return CancelledStatus();
  co_return co_await RunOne(request, &Task::mutable_reduce, &Reply::mutable_reduce,
                            Reply::kReduce, deadline, response);
}

asio::awaitable<absl::Status> FunctionCalls::Validate(v1::ValidateRequest& request,
                                                      absl::Time deadline,
                                                      v1::ValidateResponse& response) {
  const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
  if (request.function().empty()) {
    co_return absl::InvalidArgumentError("the request names no function");
  }
  // The document being written, as the API says and CouchDB always passes: an object.
  if (request.new_doc().empty()) {
    co_return absl::InvalidArgumentError(
        "the request has no new_doc: it is required, the document being written (a JSON object)");
  }
  if (!OpensAnObject(request.new_doc())) {
    co_return absl::InvalidArgumentError(absl::StrCat(
        "the new_doc is not a JSON object: ", StartOf(request.new_doc()),
        " (it is the document being written)"));
  }
  // The others as the API says (an object, or null where there may be none): a function given
  // a number for the user would fail, or pass, on what CouchDB never sends (found by an API
  // probe: user_ctx 5 and sec_obj "s" were run).
  for (auto [field, json, what] :
       {std::tuple{"old_doc", &request.old_doc(), "the document being replaced, or null"},
        std::tuple{"user_ctx", &request.user_ctx(), "the user writing, or null"},
        std::tuple{"sec_obj", &request.sec_obj(), "the database's _security object"}}) {
    // CouchDB always passes a _security object ({} for none), never null.
    const bool may_be_null = json != &request.sec_obj();
    if (json->empty() || OpensAnObject(*json) || (may_be_null && IsNull(*json))) continue;
    co_return absl::InvalidArgumentError(absl::StrCat("the ", field, " is not a JSON object: ",
                                                      StartOf(*json), " (it is ", what, ")"));
  }
  if (IsCancelled(cancellation)) co_return CancelledStatus();
  co_return co_await RunOne(request, &Task::mutable_validate, &Reply::mutable_validate,
                            Reply::kValidate, deadline, response);
}

asio::awaitable<absl::Status> FunctionCalls::CallDesignFunction(
    v1::DesignFunctionRequest& request, absl::Time deadline,
    v1::DesignFunctionResponse& response) {
  const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
  if (request.function().empty()) {
    co_return absl::InvalidArgumentError("the request names no function");
  }
  if (request.kind() == v1::DESIGN_FUNCTION_KIND_UNSPECIFIED) {
    co_return absl::InvalidArgumentError("the request does not say which kind of design function");
  }
  if (IsCancelled(cancellation)) co_return CancelledStatus();
  co_return co_await RunOne(request, &Task::mutable_design, &Reply::mutable_design,
                            Reply::kDesign, deadline, response);
}

asio::awaitable<absl::Status> FunctionCalls::Resolve(v1::ResolveRequest& request,
                                                     absl::Time deadline,
                                                     v1::ResolveResponse& response) {
  const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
  if (absl::Status s = RequireFunctions(request.functions_size()); !s.ok()) co_return s;
  // Bounded as a Map's or a Reduce's names are (the worker builds an entry for each), but a
  // name too long is that name's error in the answer, as `cnp check` reports it, not the call's.
  if (request.functions_size() > kMaxFunctionsPerCall) co_return TooManyFunctions();
  if (IsCancelled(cancellation)) co_return CancelledStatus();
  co_return co_await RunOne(request, &Task::mutable_resolve, &Reply::mutable_resolve,
                            Reply::kResolve, deadline, response);
}

}  // namespace cnp::calls
