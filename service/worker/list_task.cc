#include "absl/strings/str_cat.h"
#include "service/common/framing.h"
#include "service/worker/answered_task.h"
#include "service/worker/call_context.h"
#include "service/worker/forked_child.h"
#include "service/worker/json_to_python.h"
#include "service/worker/python_runtime.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"

namespace cnp::worker {
namespace {

// Raised into the list function when the exchange cannot go on. It derives from BaseException
// so that a function's `except Exception:` does not swallow it.
PyObject* ListAbortedClass() {
  static PyObject* cls = PyErr_NewException("_cnp.ListAborted", PyExc_BaseException, nullptr);
  return cls;
}

// get_row() inside an interactive list: the step goes out through the exchange and the next
// Task must be its list_row, exactly like couchjs's readline() inside getRow().
class ExchangeListChannel : public ListChannel {
 public:
  explicit ExchangeListChannel(ListExchange& exchange) : exchange_(exchange) {}

  PyObject* Step(PyObject* step) override {
    // A child the function forked must not take the next row: on a direct session it would
    // wait for ever for a session thread it does not have, holding CouchDB's pipes open.
    LeaveIfForkedChild();
    if (aborted()) return Abort();
    // The function caught the refusal of something past its answer's limit (a log() line):
    // it gets no further, as in any other task; the list ends there, ANSWER_TOO_LARGE.
    if (Context().answer.exceeded()) {
      refusal_ = AnswerTooLargeReply();
      return Abort();
    }
    std::optional<std::string> json = ToJson(step);
    if (!json) return nullptr;  // the function sent something that is not JSON: its error
    Reply reply;
    reply.mutable_list_step()->set_reply(*std::move(json));
    TakeLogs(*reply.mutable_logs());
    absl::StatusOr<Task> task = exchange_.SendStep(std::move(reply));
    if (!task.ok()) {
      exchange_error_ = task.status();
      return Abort();
    }
    if (!task->has_list_row()) {
      return Refuse(absl::StrCat("a list is running: only list_row tasks may be sent until it "
                                 "is done, got task kind ", task->kind_case()));
    }
    // The step that answers this row is an answer of its own, with the row task's limit.
    Context().answer.Start(task->max_answer_bytes());
    if (task->list_row().row().empty()) Py_RETURN_NONE;  // list_end
    absl::StatusOr<PyRef> row = ParseJson(task->list_row().row());
    if (!row.ok()) return Refuse(absl::StrCat("list_row: ", row.status().message()));
    return row->release();
  }

  bool aborted() const { return !exchange_error_.ok() || refusal_.has_value(); }
  const absl::Status& exchange_error() const { return exchange_error_; }
  const std::optional<Reply>& refusal() const { return refusal_; }

 private:
  PyObject* Abort() {
    PyErr_SetString(ListAbortedClass(), "the interactive list was aborted");
    return nullptr;
  }
  PyObject* Refuse(absl::string_view message) {
    refusal_ = FailureReply(Failure::BAD_INPUT, message);
    return Abort();
  }

  ListExchange& exchange_;
  absl::Status exchange_error_;
  std::optional<Reply> refusal_;  // the answer to the task that broke the list
};

// Steps as frames on the server's socket.
class SocketListExchange : public ListExchange {
 public:
  SocketListExchange(FrameReader& reader, int fd) : reader_(reader), fd_(fd) {}

  absl::StatusOr<Task> SendStep(Reply step) override {
    TakeAttributedLogs(*step.mutable_function_logs());
    // The server reads no frame over the task's limit. The step's reply fits (the JSON writer
    // kept it within the room left); log lines counted once may not, twice: they go, said so.
    if (const AnswerBudget& answer = Context().answer;
        answer.limit() > 0 && static_cast<int64_t>(step.ByteSizeLong()) > answer.limit()) {
      step.clear_function_logs();
      step.clear_logs();
      step.add_logs("cnp-worker: this step's log() lines were dropped: " + answer.Message());
    }
    StampAnswer(step);
    LeaveIfForkedChild();
    if (absl::Status s = WriteFrame(fd_, step.SerializeAsString()); !s.ok()) return s;
    std::string frame;
    if (absl::Status s = reader_.Read(frame); !s.ok()) return s;
    Task task;
    // Not a Task at all: answered like any task that is not a list_row.
    if (!task.ParseFromString(frame)) task.Clear();
    StartAnswering(task);
    // A row's task says whether the lines from here go at once (Task.logs_early): the end of
    // rows of a list the session left comes from one that takes them with the answer.
    if (!task.logs_early()) Context().eager_log = nullptr;
    return task;
  }

 private:
  FrameReader& reader_;
  int fd_;
};

class ScopedListChannel {
 public:
  explicit ScopedListChannel(ListChannel* channel) { Context().list = channel; }
  ~ScopedListChannel() { Context().list = nullptr; }
};

}  // namespace

absl::StatusOr<v1::Reply> RunInteractiveList(FunctionRegistry& registry,
                                             const v1::ListStart& start, FrameReader& reader,
                                             int fd) {
  SocketListExchange exchange(reader, fd);
  return RunInteractiveList(registry, start, exchange);
}

absl::StatusOr<v1::Reply> RunInteractiveList(FunctionRegistry& registry,
                                             const v1::ListStart& start, ListExchange& exchange) {
  absl::StatusOr<const LoadedFunction*> function = registry.Load(start.function());
  if (!function.ok()) return LoadFailureReply(function.status(), start.function());
  absl::StatusOr<PyRef> head = ParseOptionalJson(start.head(), WhenEmpty::kEmptyDict);
  absl::StatusOr<PyRef> req = ParseOptionalJson(start.req(), WhenEmpty::kEmptyDict);
  if (!head.ok() || !req.ok()) {
    const absl::Status& bad = head.ok() ? req.status() : head.status();
    return FailureReply(Failure::BAD_INPUT,
                        absl::StrCat(head.ok() ? "req: " : "head: ", bad.message()),
                        start.function());
  }

  ExchangeListChannel channel(exchange);
  PyRef outcome;
  {
    // A direct session runs the list on a thread of its own (in_process_runner.cc): that
    // thread is the call's while the list runs.
    ScopedCallThread call;
    ScopedListChannel scope(&channel);
    ScopedLogOrigin origin({"list", start.function()});
    PyObject* runtime = RuntimeModule();
    if (runtime) {
      outcome = PyRef::Steal(PyObject_CallMethod(runtime, "run_interactive_list", "OOO",
                                                 (*function)->callable.get(), head->get(),
                                                 req->get()));
      LeaveIfForkedChild();
    }
  }
  if (!channel.exchange_error().ok()) {
    PyErr_Clear();
    return channel.exchange_error();
  }
  if (channel.refusal()) {
    PyErr_Clear();
    return *channel.refusal();
  }
  if (!outcome) {
    return FailureReply(Failure::INTERNAL, TakeException().Summary(), start.function());
  }
  Reply reply;
  v1::ListStep* step = reply.mutable_list_step();
  step->set_done(true);
  cnp::v1::FunctionError error;
  StoreRuntimeResult(outcome.get(), "list", start.function(), step->mutable_reply(), &error);
  if (!error.type().empty()) *step->mutable_error() = std::move(error);
  TakeLogs(*reply.mutable_logs());
  return reply;
}

}  // namespace cnp::worker
