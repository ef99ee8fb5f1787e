// A query server whose every line is answered by AsyncQuerySession (the awaitable driver), for
// the transcript replay of that driver (async_session_replay_test.py): CouchDB's lines on stdin,
// the answers on stdout, a reset answered here with `true`, as cnp-adapter does. The tasks run
// on one real cnp-worker (tests/support's WorkerProcess, from the runfiles) behind a minimal
// AsyncTaskRunner; the worker is also the list lease. Exits 0 when stdin ends, 1 when an answer
// ends the session.
//
//   async_session_line_server [cnp-worker flags, e.g. --python-path=DIR]
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "service/couchdb/async_query_session.h"
#include "tests/support/worker_process.h"

namespace cnp::couchdb {
namespace {

using pool::Reply;
using pool::Task;

// One worker process, asked in turn; blocking I/O, which a test tool may afford.
class OneWorkerRunner final : public pool::AsyncTaskRunner {
 public:
  explicit OneWorkerRunner(worker::testing::WorkerProcess& worker) : worker_(worker) {}

  asio::awaitable<absl::StatusOr<Reply>> Run(Task task, absl::Time deadline) override {
    co_return Exchange(task, deadline);
  }
  asio::awaitable<std::vector<absl::StatusOr<Reply>>> RunAll(std::vector<Task> tasks,
                                                             absl::Time deadline) override {
    std::vector<absl::StatusOr<Reply>> replies;
    for (const Task& task : tasks) replies.push_back(Exchange(task, deadline));
    co_return replies;
  }
  asio::awaitable<absl::StatusOr<std::unique_ptr<pool::AsyncWorkerLease>>> Lease(
      absl::Time) override {
    co_return std::make_unique<Held>(*this);
  }
  int size() const override { return 1; }

 private:
  class Held final : public pool::AsyncWorkerLease {
   public:
    explicit Held(OneWorkerRunner& runner) : runner_(runner) {}
    asio::awaitable<absl::StatusOr<Reply>> Exchange(Task task, absl::Time deadline) override {
      co_return runner_.Exchange(task, deadline);
    }

   private:
    OneWorkerRunner& runner_;
  };

  // Deadlines are not kept: the replay's own timeouts bound a stuck worker.
  absl::StatusOr<Reply> Exchange(const Task& task, absl::Time) {
    if (absl::Status sent = worker_.Send(task); !sent.ok()) return sent;
    return worker_.Receive();
  }

  worker::testing::WorkerProcess& worker_;
};

asio::awaitable<int> Serve(AsyncQuerySession& session) {
  std::string line;
  while (std::getline(std::cin, line)) {
    const bool reset = PeekCommand(line) == CommandKind::kReset;
    if (reset) std::cout << "true\n" << std::flush;
    std::optional<v1::SessionOutput> answer = co_await session.Handle(line);
    if (!answer.has_value()) {
      if (!reset) std::cerr << "no answer to a line that is not a reset: " << line << std::endl;
      continue;
    }
    for (const std::string& reply : answer->lines()) std::cout << reply << '\n';
    std::cout << std::flush;
    if (answer->exit()) co_return 1;
  }
  co_await session.Close();
  co_return 0;
}

int Main(int argc, char** argv) {
  absl::StatusOr<std::unique_ptr<worker::testing::WorkerProcess>> worker =
      worker::testing::WorkerProcess::Start(std::vector<std::string>(argv + 1, argv + argc));
  if (!worker.ok()) {
    std::cerr << "cnp-worker did not start: " << worker.status() << std::endl;
    return 2;
  }
  OneWorkerRunner runner(**worker);
  AsyncQuerySession session(runner);
  asio::io_context io;
  int code = 1;
  asio::co_spawn(io, Serve(session), [&](std::exception_ptr error, int served) {
    if (error) std::rethrow_exception(error);
    code = served;
  });
  io.run();
  if ((*worker)->CloseAndWait() != 0) std::cerr << (*worker)->ReadStderr();
  return code;
}

}  // namespace
}  // namespace cnp::couchdb

int main(int argc, char** argv) { return cnp::couchdb::Main(argc, argv); }
