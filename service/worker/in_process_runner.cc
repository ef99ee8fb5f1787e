#include "service/worker/in_process_runner.h"

#include <Python.h>

#include <new>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "service/worker/call_context.h"
#include "service/worker/task_support.h"
#include "service/worker/tasks.h"

namespace cnp::worker {
namespace {

constexpr char kListOutOfMemory[] =
    "MemoryError: the worker ran out of memory running the list (its cap, cnp-server's "
    "--worker-memory-mb, reached); the worker is being replaced";

// Releases the GIL for the scope (the other thread runs Python meanwhile).
class WithoutGil {
 public:
  WithoutGil() : state_(PyEval_SaveThread()) {}
  ~WithoutGil() { PyEval_RestoreThread(state_); }
  WithoutGil(const WithoutGil&) = delete;
  WithoutGil& operator=(const WithoutGil&) = delete;

 private:
  PyThreadState* state_;
};

// One interactive list on its own thread. The session thread calls Exchange() with list_start,
// then with each list_row; each call hands the task over, releases the GIL and waits for the
// function's next step (or its end). The list thread's get_row() does the mirror image.
class ThreadedListLease final : public pool::WorkerLease, private ListExchange {
 public:
  explicit ThreadedListLease(FunctionRegistry& registry) : registry_(registry) {}

  // A list still running (the session ended half-way) is unwound: get_row() raises ListAborted.
  ~ThreadedListLease() override {
    if (!thread_.joinable()) return;
    if (!Finished()) {
      Hand({absl::CancelledError("the session ended while the list was running")});
      Await().IgnoreError();
    }
    WithoutGil unlocked;
    thread_.join();
  }

  absl::StatusOr<pool::Reply> Exchange(const pool::Task& task, absl::Time) override {
    if (Finished()) {
      return FailureReply(Failure::BAD_INPUT, "the list has already finished");
    }
    if (!thread_.joinable()) {
      if (!task.has_list_start()) {
        return FailureReply(Failure::BAD_INPUT, "a list lease starts with a list_start task");
      }
      try {
        thread_ = std::thread([this, start = task.list_start()] { RunList(start); });
      } catch (const std::system_error&) {
        // No room for the thread's stack under the worker's memory cap.
        Context().memory_error = true;
        return FailureReply(Failure::INTERNAL, kListOutOfMemory);
      }
    } else {
      Hand(task);
    }
    return Await();
  }

 private:
  // On the list thread.
  void RunList(const v1::ListStart& start) ABSL_LOCKS_EXCLUDED(mutex_) {
    PyGILState_STATE gil = PyGILState_Ensure();
    absl::StatusOr<pool::Reply> reply;
    try {
      reply = RunInteractiveList(registry_, start, *this);
    } catch (const std::bad_alloc&) {
      // The worker's own C++ could not grow a buffer under its memory cap, as the pool's path
      // answers it (task_loop.cc); escaping this thread, it would abort the worker.
      PyErr_Clear();
      Context().memory_error = true;
      reply = FailureReply(Failure::INTERNAL, kListOutOfMemory);
    }
    {
      absl::MutexLock lock(&mutex_);
      to_session_ = std::move(reply);
      finished_ = true;
    }
    PyGILState_Release(gil);
  }

  // get_row() on the list thread: the step goes to the session thread, which answers with the
  // next task.
  absl::StatusOr<pool::Task> SendStep(pool::Reply step) override ABSL_LOCKS_EXCLUDED(mutex_) {
    {
      absl::MutexLock lock(&mutex_);
      to_session_ = std::move(step);
    }
    WithoutGil unlocked;
    absl::MutexLock lock(&mutex_);
    mutex_.Await(absl::Condition(
        +[](std::optional<absl::StatusOr<pool::Task>>* task) { return task->has_value(); },
        &to_list_));
    absl::StatusOr<pool::Task> task = *std::move(to_list_);
    to_list_.reset();
    return task;
  }

  // On the session thread.
  void Hand(absl::StatusOr<pool::Task> task) ABSL_LOCKS_EXCLUDED(mutex_) {
    absl::MutexLock lock(&mutex_);
    to_list_ = std::move(task);
  }

  absl::StatusOr<pool::Reply> Await() ABSL_LOCKS_EXCLUDED(mutex_) {
    WithoutGil unlocked;
    absl::MutexLock lock(&mutex_);
    mutex_.Await(absl::Condition(
        +[](std::optional<absl::StatusOr<pool::Reply>>* reply) { return reply->has_value(); },
        &to_session_));
    absl::StatusOr<pool::Reply> reply = *std::move(to_session_);
    to_session_.reset();
    return reply;
  }

  bool Finished() ABSL_LOCKS_EXCLUDED(mutex_) {
    absl::MutexLock lock(&mutex_);
    return finished_;
  }

  FunctionRegistry& registry_;
  std::thread thread_;
  // A hand-over in either direction is a value put in an empty slot; the waiting side's
  // Await() wakes when its slot fills.
  absl::Mutex mutex_;
  std::optional<absl::StatusOr<pool::Task>> to_list_ ABSL_GUARDED_BY(mutex_);
  std::optional<absl::StatusOr<pool::Reply>> to_session_ ABSL_GUARDED_BY(mutex_);
  bool finished_ ABSL_GUARDED_BY(mutex_) = false;  // the list thread's last hand-over is done
};

}  // namespace

absl::StatusOr<pool::Reply> InProcessRunner::Run(const pool::Task& task, absl::Time) {
  pool::Reply reply = RunHere(task);
  // log() lines that no result took (made while a module was imported, say) go with this
  // command's answer, as the task loop sends them over the pool, not with the next one's.
  if (!Context().logs.empty()) TakeLogs(*reply.mutable_logs());
  return reply;
}

pool::Reply InProcessRunner::RunHere(const pool::Task& task) {
  switch (task.kind_case()) {
    case pool::Task::kMap: return RunMap(registry_, task.map(), doc_scratch_);
    case pool::Task::kReduce:
      if (task.has_session_line()) {
        return RunReduceOfLine(registry_, task.reduce(), task.session_line(), doc_scratch_);
      }
      return RunReduce(registry_, task.reduce());
    case pool::Task::kValidate: return RunValidate(registry_, task.validate());
    case pool::Task::kDesign: return RunDesignFunction(registry_, task.design());
    case pool::Task::kResolve: return RunResolve(registry_, task.resolve(), task.versions_as_run());
    default:
      return FailureReply(Failure::BAD_INPUT,
                          "only map, reduce, validate, design and resolve tasks run in process");
  }
}

absl::StatusOr<std::unique_ptr<pool::WorkerLease>> InProcessRunner::Lease(absl::Time) {
  return std::make_unique<ThreadedListLease>(registry_);
}

}  // namespace cnp::worker
