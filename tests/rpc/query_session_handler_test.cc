// The Session stream's handler when the server's shutdown cuts a command's work (past
// --shutdown-grace the pool kills the worker, and says so with IsServerStopping): the stream
// ends UNAVAILABLE with no answer, so that its adapter sends the command again on another
// stream, as when a stream breaks. Before, the command was answered
// ["error","unavailable","cnp-server: the server shut down before ..."], and CouchDB got that
// although the adapter had another replica and time left (found by a review). A worker that
// crashed on the command (NotRetryable) is still answered with its error line.
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "common/retry_advice.h"
#include "gtest/gtest.h"
#include "service/rpc/query_session_handler.h"
#include "tests/support/fake_task_runner.h"

namespace cnp::rpc {
namespace {

using testing::FakeAnswer;
using testing::FakeTaskRunner;

class Handled {
 public:
  explicit Handled(FakeTaskRunner::Script script)
      : runner_(1, std::move(script)), handler_(runner_, {}) {}

  absl::StatusOr<std::optional<v1::SessionOutput>> Send(const std::string& line) {
    v1::SessionInput input;
    input.set_line(line);
    std::optional<absl::StatusOr<std::optional<v1::SessionOutput>>> answer;
    asio::co_spawn(io_, handler_.Handle(input),
                   [&](std::exception_ptr error,
                       absl::StatusOr<std::optional<v1::SessionOutput>> output) {
                     if (error) std::rethrow_exception(error);
                     answer = std::move(output);
                   });
    io_.restart();
    io_.run();
    EXPECT_TRUE(answer.has_value());
    return answer.value_or(absl::InternalError("not answered"));
  }

 private:
  asio::io_context io_;
  FakeTaskRunner runner_;
  QuerySessionHandler handler_;
};

TEST(QuerySessionHandlerTest, ACommandCutByTheServersShutdownEndsTheStreamUnanswered) {
  Handled session([](const pool::Task&) {
    return FakeAnswer{ServerStopping(absl::UnavailableError(
        "the server shut down before Map of fns.town finished; retry on another server"))};
  });
  ASSERT_TRUE(session.Send(R"(["reset",{"timeout":5000}])").ok());
  absl::StatusOr<std::optional<v1::SessionOutput>> answer =
      session.Send(R"(["add_fun","fns.town"])");
  ASSERT_FALSE(answer.ok()) << (answer->has_value() ? (*answer)->DebugString() : "nothing");
  EXPECT_TRUE(absl::IsUnavailable(answer.status())) << answer.status();
  EXPECT_FALSE(IsNotRetryable(answer.status()));
}

TEST(QuerySessionHandlerTest, AWorkerThatCrashedOnTheCommandIsStillAnswered) {
  Handled session([](const pool::Task&) {
    return FakeAnswer{NotRetryable(absl::UnavailableError(
        "the worker running Map of fns.town was killed by signal 9; it is being replaced"))};
  });
  ASSERT_TRUE(session.Send(R"(["reset",{"timeout":5000}])").ok());
  absl::StatusOr<std::optional<v1::SessionOutput>> answer =
      session.Send(R"(["add_fun","fns.town"])");
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_TRUE(answer->has_value());
  ASSERT_EQ((*answer)->lines_size(), 1);
  EXPECT_EQ((*answer)->lines(0).rfind(R"(["error","unavailable",)", 0), 0u)
      << (*answer)->lines(0);
}

// The same words without the type are an ordinary failure: the signal is the type.
TEST(QuerySessionHandlerTest, TheMessageAloneIsNoSignal) {
  Handled session([](const pool::Task&) {
    return FakeAnswer{absl::UnavailableError(
        "the server shut down before Map of fns.town finished; retry on another server")};
  });
  ASSERT_TRUE(session.Send(R"(["reset",{"timeout":5000}])").ok());
  absl::StatusOr<std::optional<v1::SessionOutput>> answer =
      session.Send(R"(["add_fun","fns.town"])");
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_TRUE(answer->has_value());
  EXPECT_EQ((*answer)->lines_size(), 1);
}

}  // namespace
}  // namespace cnp::rpc
