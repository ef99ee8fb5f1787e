#include "service/worker/task_loop.h"

#include "absl/strings/str_cat.h"
#include "service/common/framing.h"
#include "service/worker/call_context.h"
#include "service/worker/frame_reader.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"

namespace cnp::worker {
namespace {

absl::StatusOr<Reply> Run(FunctionRegistry& registry, Task& task, FrameReader& reader, int fd) {
  switch (task.kind_case()) {
    case Task::kMap: return RunMap(registry, *task.mutable_map());
    case Task::kReduce: return RunReduce(registry, task.reduce());
    case Task::kValidate: return RunValidate(registry, task.validate());
    case Task::kDesign: return RunDesignFunction(registry, task.design());
    case Task::kResolve: return RunResolve(registry, task.resolve());
    case Task::kListStart: return RunInteractiveList(registry, task.list_start(), reader, fd);
    case Task::kListRow:
      return FailureReply(Failure::BAD_INPUT, "list_row without a running list (send list_start first)");
    case Task::kDirectSession:
      return FailureReply(Failure::BAD_INPUT, "this worker does not serve direct sessions yet");
    case Task::KIND_NOT_SET: break;
  }
  return FailureReply(Failure::BAD_INPUT, "the task has no kind set");
}

}  // namespace

absl::Status ServeTasks(int fd, FunctionRegistry& registry) {
  FrameReader reader(fd);
  std::string frame;
  for (;;) {
    if (absl::Status s = reader.Read(frame); !s.ok()) {
      // The server closing the socket is how a worker is told to stop.
      return absl::IsUnavailable(s) ? absl::OkStatus() : s;
    }
    Task task;
    absl::StatusOr<Reply> reply = task.ParseFromString(frame)
                                      ? Run(registry, task, reader, fd)
                                      : FailureReply(Failure::BAD_INPUT, "the frame is not a Task");
    if (!reply.ok()) return reply.status();
    // Logs no per-item result took (made before a Failure, say) still reach the server.
    TakeLogs(*reply->mutable_logs());
    if (Context().memory_error) {
      reply->set_recycle(true);
      Context().memory_error = false;
    }
    if (absl::Status s = WriteFrame(fd, reply->SerializeAsString()); !s.ok()) return s;
  }
}

}  // namespace cnp::worker
