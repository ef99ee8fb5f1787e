#include "service/worker/task_loop.h"

#include <malloc.h>
#include <unistd.h>

#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "service/common/framing.h"
#include "service/common/shared_flag.h"
#include "service/worker/answered_task.h"
#include "service/worker/call_context.h"
#include "service/worker/direct_session.h"
#include "service/worker/forked_child.h"
#include "service/worker/frame_reader.h"
#include "service/worker/stray_threads.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"

namespace cnp::worker {
namespace {

void CloseAll(const std::vector<int>& descriptors) {
  for (int descriptor : descriptors) ::close(descriptor);
}

// Takes ownership of `descriptors`: CouchDB's input and output pipes, then the server's
// CouchDbTurn word, if it sent one.
Reply RunDirectSession(FunctionRegistry& registry, const v1::DirectSession& session,
                       std::vector<int>& descriptors, int fd) {
  if (descriptors.size() != 2 && descriptors.size() != 3) {
    CloseAll(descriptors);
    return FailureReply(Failure::BAD_INPUT,
                        absl::StrCat("a direct_session task carries two descriptors (CouchDB's "
                                     "input and output), and a third for the server's "
                                     "v1::CouchDbTurn word if it sends one; not ",
                                     descriptors.size()));
  }
  std::optional<SharedFlag> couchdb_turn;
  if (descriptors.size() == 3) {
    absl::StatusOr<SharedFlag> mapped = SharedFlag::Map(descriptors[2]);
    descriptors.pop_back();  // closed by Map
    if (!mapped.ok()) {
      CloseAll(descriptors);
      descriptors.clear();
      return FailureReply(Failure::BAD_INPUT, std::string(mapped.status().message()));
    }
    couchdb_turn = std::move(*mapped);
  }
  const int input = descriptors[0], output = descriptors[1];
  descriptors.clear();
  return ServeDirectSession(registry, session, input, output, fd,
                            couchdb_turn.has_value() ? &*couchdb_turn : nullptr);
}

absl::StatusOr<Reply> Run(FunctionRegistry& registry, Task& task, FrameReader& reader, int fd,
                          std::vector<int>& descriptors) {
  switch (task.kind_case()) {
    case Task::kMap: {
      // Reused from task to task, as the in-process runner's: a copy allocates nothing once the
      // buffer is as big as the documents.
      thread_local std::string map_scratch;
      return RunMap(registry, task.map(), map_scratch);
    }
    case Task::kReduce: {
      if (!task.has_session_line()) return RunReduce(registry, task.reduce());
      std::string scratch;
      return RunReduceOfLine(registry, task.reduce(), task.session_line(), scratch);
    }
    case Task::kValidate: return RunValidate(registry, task.validate());
    case Task::kDesign: return RunDesignFunction(registry, task.design());
    case Task::kResolve: return RunResolve(registry, task.resolve(), task.versions_as_run());
    case Task::kListStart: return RunInteractiveList(registry, task.list_start(), reader, fd);
    case Task::kListRow:
      return FailureReply(Failure::BAD_INPUT, "list_row without a running list (send list_start first)");
    case Task::kDirectSession: return RunDirectSession(registry, task.direct_session(), descriptors, fd);
    case Task::KIND_NOT_SET: break;
  }
  return FailureReply(Failure::BAD_INPUT, "the task has no kind set");
}

// What ran, for the log line about the threads it left behind (stray_threads.h).
std::string WhatRan(const Task& task) {
  switch (task.kind_case()) {
    case Task::kMap: return absl::StrCat("a map of ", absl::StrJoin(task.map().functions(), ", "));
    case Task::kReduce:
      return absl::StrCat("a reduce of ", absl::StrJoin(task.reduce().functions(), ", "));
    case Task::kValidate: return absl::StrCat("a validate of ", task.validate().function());
    case Task::kDesign: return absl::StrCat("a call of ", task.design().function());
    case Task::kResolve:
      return absl::StrCat("loading ", absl::StrJoin(task.resolve().functions(), ", "));
    case Task::kListStart: return absl::StrCat("the list ", task.list_start().function());
    case Task::kDirectSession: return absl::StrCat("direct session ", task.direct_session().id());
    default: return "a task";
  }
}

// A task's log() lines sent to the server as the function makes them (Task.logs_early), each
// in a task_log frame with its attributed copy: the server forwards them to CouchDB at once.
class ServerLog final : public EagerLog {
 public:
  explicit ServerLog(int fd) : fd_(fd) {}
  void Write(std::string_view message) override {
    // A child a function forked has the socket pointed at /dev/null; it says nothing anyway.
    // After a failed write the server is gone: the answer's write finds that out.
    if (!written_.ok() || InForkedChild()) return;
    Reply interim;
    interim.mutable_task_log()->set_message(message.data(), message.size());
    TakeAttributedLogs(*interim.mutable_function_logs());
    // The server reads no frame over the task's answer limit (it would kill this worker): a line
    // that fits alone goes without its attributed copy, which holds it again.
    if (const int64_t limit = Context().answer.limit();
        limit > 0 && static_cast<int64_t>(interim.ByteSizeLong()) > limit) {
      interim.clear_function_logs();
    }
    StampAnswer(interim);
    written_ = WriteFrame(fd_, interim.SerializeAsString());
  }

 private:
  const int fd_;
  absl::Status written_;
};

// A task or reply larger than this gives its memory back once answered (GiveBackMemory).
constexpr size_t kLargeTaskBytes = size_t{8} << 20;

// One large task must not leave the worker holding its size for good (measured: 71 MB kept
// after a 48 MB map task): every worker counts against --worker-memory-mb and the host for as
// long as it lives. The frame buffer is reused for every task and keeps its capacity; and
// the task's Python objects, freed, stay in glibc's heap, whose top it trims on its own only
// below a threshold it raises as large blocks come and go. A trim after a large task costs a
// few milliseconds; a small task never pays it.
void GiveBackMemory(std::string& frame) {
  std::string().swap(frame);
  ::malloc_trim(0);
}

}  // namespace

// Where: a probe's rereduce of 66 MB of nested arrays ran out while its request was read
// into Python objects, and was told "building the answer".
constexpr char kOutOfMemoryInTask[] =
    "MemoryError: the worker ran out of memory reading the task or building its answer (its "
    "cap, cnp-server's --worker-memory-mb, reached); the worker is being replaced";
constexpr char kOutOfMemoryInReply[] =
    "MemoryError: the worker ran out of memory writing the answer (its cap, cnp-server's "
    "--worker-memory-mb, reached); the worker is being replaced";

absl::Status ServeTasks(int fd, FunctionRegistry& registry) {
  const ChildMustNotHold server_socket(fd);  // the server watches it for this worker's end
  FrameReader reader(fd);
  ServerLog server_log(fd);
  std::string frame;
  std::vector<int> descriptors;
  for (;;) {
    descriptors.clear();
    absl::Status read;
    try {
      read = reader.Read(frame, &descriptors);
    } catch (const std::bad_alloc&) {
      // The rest of the frame is unread, so no reply could be told from the task's bytes: the
      // worker ends, with this reason, and the server replaces it.
      CloseAll(descriptors);
      return absl::ResourceExhaustedError(
          "out of memory reading a task under the worker's cap (cnp-server's "
          "--worker-memory-mb)");
    }
    if (!read.ok()) {
      // The server closing the socket is how a worker is told to stop.
      return absl::IsUnavailable(read) ? absl::OkStatus() : read;
    }
    // In a block of its own: the task, its reply and their buffers are freed before a large
    // task's memory is given back.
    bool large = frame.capacity() > kLargeTaskBytes;
    {
      Task task;
      absl::StatusOr<Reply> reply;
      bool answering = false;  // StartAnswering has the task's number
      try {
        const bool parsed = task.ParseFromString(frame);
        if (parsed) {
          StartAnswering(task);
        } else {
          StartAnsweringUnreadTask();
        }
        answering = true;
        // A list's steps restart it for each list_row task, so the limit checked at the end is
        // the budget's own: that of the task the reply answers.
        Context().answer.Start(parsed ? task.max_answer_bytes() : 0);
        Context().eager_log_held = false;
        Context().eager_log = parsed && task.logs_early() ? &server_log : nullptr;
        {
          ScopedCallThread call;
          reply = parsed ? Run(registry, task, reader, fd, descriptors)
                         : FailureReply(Failure::BAD_INPUT, "the frame is not a Task");
        }
        Context().eager_log = nullptr;
        if (reply.ok()) {
          // Logs no per-item result took (made before a Failure, say) still reach the server.
          TakeLogs(*reply->mutable_logs());
          TakeAttributedLogs(*reply->mutable_function_logs());
        }
      } catch (const std::bad_alloc&) {
        // The worker's own C++ could not grow a buffer (the task as parsed, a document's rows,
        // a reply, the log lines moved into it) under its memory cap; what a function asks for
        // is a MemoryError of its own, in its result. Before, one out of the parse or the log
        // lines ended the worker with abort().
        PyErr_Clear();
        if (!answering) StartAnsweringUnreadTask();  // out of memory parsing it
        Context().eager_log = nullptr;
        Context().memory_error = true;
        Context().logs.clear();
        Context().attributed_logs.clear();
        Task().Swap(&task);
        large = true;  // and the frame's memory goes back below
        reply = FailureReply(Failure::INTERNAL, kOutOfMemoryInTask);
      }
      CloseAll(descriptors);  // what a task did not take must not leak
      if (!reply.ok()) return reply.status();
      // The server reads no frame over the limit (it would kill this worker): whatever got past
      // the checks on the way (the attributed copies of the log lines) is caught here.
      if (const AnswerBudget& answer = Context().answer;
          answer.exceeded() ||
          (answer.limit() > 0 && static_cast<int64_t>(reply->ByteSizeLong()) > answer.limit())) {
        reply = AnswerTooLargeReply();
      }
      Context().answer.Start(0);
      // Threads a function started that still run would run beside the next call, whoever's.
      if (const int stray = StrayPythonThreads(); stray > 0) {
        reply->set_recycle(true);
        reply->set_threads_left_running(!Context().memory_error);
        LogStrayThreads(stray, WhatRan(task));
      }
      if (Context().memory_error) {
        reply->set_recycle(true);
        Context().memory_error = false;
      }
      StampAnswer(*reply);
      std::string frame_out;
      try {
        frame_out = reply->SerializeAsString();
      } catch (const std::bad_alloc&) {
        Reply failed = FailureReply(Failure::INTERNAL, kOutOfMemoryInReply);
        failed.set_recycle(true);
        StampAnswer(failed);
        frame_out = failed.SerializeAsString();
      }
      // A child a function forked must not answer: the server would take it for the next
      // task's reply.
      LeaveIfForkedChild();
      if (absl::Status s = WriteFrame(fd, frame_out); !s.ok()) return s;
      large = large || frame_out.capacity() > kLargeTaskBytes;
    }
    if (large) GiveBackMemory(frame);
  }
}

}  // namespace cnp::worker
