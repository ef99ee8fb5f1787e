#include "service/pool/worker.h"

#include <variant>

#include "absl/strings/str_cat.h"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"

namespace cnp::pool {

QuickExchange Worker::TryQuickExchange(const Task& /*task*/, absl::Duration /*wait*/) {
  return QuickExchange();
}

asio::awaitable<absl::StatusOr<Reply>> Worker::FinishExchange() {
  co_return absl::InternalError("this worker has no exchange left pending");
}

asio::awaitable<std::string> HowItEnded(Worker& worker, absl::Duration grace) {
  using asio::experimental::awaitable_operators::operator||;
  asio::steady_timer timer(co_await asio::this_coro::executor, absl::ToChronoNanoseconds(grace));
  std::variant<std::optional<std::string>, std::monostate> ended =
      co_await (worker.Ended() || timer.async_wait(asio::use_awaitable));
  if (ended.index() == 0 && std::get<0>(ended).has_value()) co_return *std::get<0>(ended);
  worker.Kill();
  const std::optional<std::string> how = co_await worker.Ended();
  co_return absl::StrCat(how.value_or("ended"), " after it stopped answering");
}

}  // namespace cnp::pool
