// pool::KeptWorker against a scripted runner (one io_context, no processes): the first call
// keeps the worker that answered it, the next ones exchange on it; a call that comes while the
// kept worker is busy goes through the pool; asked back, the worker goes at once or after the
// exchange or keeping call in progress; a worker that died while kept idle sends the task
// elsewhere; a failed
// exchange or a worker due for replacement lets it go; a late request for a worker already
// given back does nothing to the next one.
#include "service/pool/kept_worker.h"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/use_awaitable.hpp"
#include "gtest/gtest.h"

namespace cnp::pool {
namespace {

Reply Answer(const std::string& from) {
  Reply reply;
  reply.mutable_validate()->set_message(from);
  return reply;
}

// Runs through "the pool" answer at once; a kept worker's exchanges after `exchange_delay`.
class ScriptedRunner final : public AsyncTaskRunner {
 public:
  explicit ScriptedRunner(asio::io_context& io) : io_(io) {}

  struct Lease final : AsyncWorkerLease {
    Lease(ScriptedRunner& runner, int id) : runner(runner), id(id) {}
    ~Lease() override { runner.released.push_back(id); }
    asio::awaitable<absl::StatusOr<Reply>> Exchange(Task, absl::Time) override {
      ++runner.exchanges;
      if (runner.exchange_delay > absl::ZeroDuration()) {
        asio::steady_timer timer(runner.io_, absl::ToChronoNanoseconds(runner.exchange_delay));
        asio::error_code ec;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      if (runner.fail_exchange) {
        ended_before = runner.ended_before_task;
        co_return absl::UnavailableError("the kept worker is gone");
      }
      co_return Answer("kept " + std::to_string(id));
    }
    bool EndedBeforeTask() const override { return ended_before; }
    bool ShouldGiveBack() const override { return runner.give_back; }
    ScriptedRunner& runner;
    const int id;
    bool ended_before = false;
  };

  asio::awaitable<absl::StatusOr<Reply>> Run(Task, absl::Time) override {
    ++runs;
    co_return Answer("pool");
  }
  asio::awaitable<std::vector<absl::StatusOr<Reply>>> RunAll(std::vector<Task>,
                                                             absl::Time) override {
    co_return std::vector<absl::StatusOr<Reply>>{};
  }
  asio::awaitable<absl::StatusOr<std::unique_ptr<AsyncWorkerLease>>> Lease(absl::Time) override {
    co_return absl::UnimplementedError("not here");
  }
  asio::awaitable<KeptRun> RunAndKeep(Task, absl::Time, std::function<void()> asked,
                                      TaskLogListener* = nullptr) override {
    ++keeps;
    wanted.push_back(std::move(asked));
    if (ask_back_before_answer) {
      // The pool asks for the worker back before its answer reaches the owner, and the owner's
      // executor runs that request first.
      wanted.back()();
      asio::steady_timer later(io_, std::chrono::milliseconds(1));
      asio::error_code ec;
      co_await later.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    std::unique_ptr<AsyncWorkerLease> kept;
    if (spare) kept = std::make_unique<struct Lease>(*this, ++leases);
    co_return KeptRun{Answer("pool, keeping"), std::move(kept)};
  }
  int size() const override { return 2; }

  asio::io_context& io_;
  bool spare = true;  // RunAndKeep keeps the worker
  absl::Duration exchange_delay = absl::ZeroDuration();
  bool fail_exchange = false;
  bool ended_before_task = false;
  bool give_back = false;
  bool ask_back_before_answer = false;
  int runs = 0, keeps = 0, exchanges = 0, leases = 0;
  std::vector<int> released;                  // leases destroyed, in order
  std::vector<std::function<void()>> wanted;  // each RunAndKeep's request to give it back
};

class KeptWorkerTest : public ::testing::Test {
 protected:
  // Starts one call; its answer (the reply's message, or the error) lands in the result.
  std::shared_ptr<std::optional<std::string>> Start() {
    auto result = std::make_shared<std::optional<std::string>>();
    asio::co_spawn(
        io_,
        [this, result]() -> asio::awaitable<void> {
          Task task;
          absl::StatusOr<Reply> reply = co_await kept_.Run(task, absl::InfiniteFuture());
          *result = reply.ok() ? reply->validate().message()
                               : std::string(reply.status().message());
        },
        [](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
        });
    return result;
  }
  std::string Call() {
    auto result = Start();
    io_.restart();
    io_.run();
    EXPECT_TRUE(result->has_value());
    return result->value_or("(no answer)");
  }
  void RunPosted() {
    io_.restart();
    io_.run();
  }

  asio::io_context io_;
  ScriptedRunner runner_{io_};
  KeptWorker kept_{runner_, io_.get_executor()};
};

TEST_F(KeptWorkerTest, TheFirstCallKeepsTheWorkerAndTheNextOnesUseIt) {
  EXPECT_EQ(Call(), "pool, keeping");
  EXPECT_TRUE(kept_.holds_worker());
  EXPECT_EQ(Call(), "kept 1");
  EXPECT_EQ(Call(), "kept 1");
  EXPECT_EQ(runner_.keeps, 1);
  EXPECT_EQ(runner_.exchanges, 2);
  EXPECT_EQ(runner_.runs, 0);
}

TEST_F(KeptWorkerTest, NothingIsKeptWhenThePoolCannotSpareIt) {
  runner_.spare = false;
  EXPECT_EQ(Call(), "pool, keeping");
  EXPECT_FALSE(kept_.holds_worker());
  EXPECT_EQ(Call(), "pool, keeping");  // it asks again, each call
  EXPECT_EQ(runner_.keeps, 2);
}

TEST_F(KeptWorkerTest, ACallWhileTheKeptWorkerIsBusyGoesThroughThePool) {
  ASSERT_EQ(Call(), "pool, keeping");
  runner_.exchange_delay = absl::Milliseconds(5);
  auto first = Start();
  auto second = Start();
  RunPosted();
  EXPECT_EQ(first->value_or(""), "kept 1");
  EXPECT_EQ(second->value_or(""), "pool");
  EXPECT_EQ(runner_.exchanges, 1);
  EXPECT_EQ(runner_.runs, 1);
  EXPECT_TRUE(kept_.holds_worker());
}

TEST_F(KeptWorkerTest, AskedBackWhileIdleTheWorkerGoesAtOnce) {
  ASSERT_EQ(Call(), "pool, keeping");
  runner_.wanted.at(0)();  // the pool's thread, in production: posted to the owner's executor
  EXPECT_TRUE(runner_.released.empty());
  RunPosted();
  EXPECT_EQ(runner_.released, std::vector<int>{1});
  EXPECT_FALSE(kept_.holds_worker());
  EXPECT_EQ(Call(), "pool, keeping");  // the next call asks the pool again
  EXPECT_EQ(runner_.keeps, 2);
}

TEST_F(KeptWorkerTest, AskedBackDuringAnExchangeTheWorkerGoesAfterIt) {
  ASSERT_EQ(Call(), "pool, keeping");
  runner_.exchange_delay = absl::Milliseconds(20);
  auto result = Start();
  // Until the exchange has suspended, then the request to give the worker back.
  io_.restart();
  io_.poll();
  runner_.wanted.at(0)();
  io_.poll();
  EXPECT_TRUE(runner_.released.empty()) << "let go in the middle of its exchange";
  RunPosted();
  EXPECT_EQ(result->value_or(""), "kept 1");
  EXPECT_EQ(runner_.released, std::vector<int>{1});
  EXPECT_FALSE(kept_.holds_worker());
}

TEST_F(KeptWorkerTest, AskedBackBeforeTheKeepingCallEndsTheWorkerGoesWhenItDoes) {
  runner_.ask_back_before_answer = true;
  EXPECT_EQ(Call(), "pool, keeping");
  // The pool asks only once: kept now, the worker would stay kept while a caller waits.
  EXPECT_EQ(runner_.released, std::vector<int>{1});
  EXPECT_FALSE(kept_.holds_worker());
}

TEST_F(KeptWorkerTest, AWorkerThatDiedWhileKeptIdleSendsTheTaskElsewhere) {
  ASSERT_EQ(Call(), "pool, keeping");
  runner_.fail_exchange = true;
  runner_.ended_before_task = true;
  EXPECT_EQ(Call(), "pool");
  EXPECT_EQ(runner_.released, std::vector<int>{1});
  EXPECT_EQ(runner_.runs, 1);
}

TEST_F(KeptWorkerTest, AFailedExchangeIsTheCallsAnswerAndLetsTheWorkerGo) {
  ASSERT_EQ(Call(), "pool, keeping");
  runner_.fail_exchange = true;
  EXPECT_EQ(Call(), "the kept worker is gone");
  EXPECT_EQ(runner_.released, std::vector<int>{1});
  EXPECT_EQ(runner_.runs, 0);  // the task reached the worker: not run twice
  EXPECT_FALSE(kept_.holds_worker());
}

TEST_F(KeptWorkerTest, AWorkerDueForReplacementGoesBackAfterItsReply) {
  ASSERT_EQ(Call(), "pool, keeping");
  runner_.give_back = true;
  EXPECT_EQ(Call(), "kept 1");
  EXPECT_EQ(runner_.released, std::vector<int>{1});
  EXPECT_FALSE(kept_.holds_worker());
}

TEST_F(KeptWorkerTest, ALateRequestForAWorkerGivenBackLeavesTheNextOne) {
  ASSERT_EQ(Call(), "pool, keeping");
  runner_.wanted.at(0)();
  RunPosted();
  ASSERT_EQ(Call(), "pool, keeping");  // a second worker kept
  ASSERT_TRUE(kept_.holds_worker());
  runner_.wanted.at(0)();  // the first worker's request, once more
  RunPosted();
  EXPECT_TRUE(kept_.holds_worker());
  EXPECT_EQ(Call(), "kept 2");
}

}  // namespace
}  // namespace cnp::pool
