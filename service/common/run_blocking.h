// Runs code that blocks (a synchronous HTTP client, a synchronous task runner) on an executor
// whose threads may block - an asio::thread_pool the server owns - and awaits its result from a
// coroutine without blocking the coroutine's thread.
//
//   absl::Status status = co_await RunBlocking(upload_pool.get_executor(),
//       [&](std::stop_token stop) { return uploader.Run(request, emit, stop); });
//
// The result comes back on the awaiting coroutine's own executor. Cancelling the await
// (terminal or partial cancellation through the coroutine's cancellation slot) requests a stop
// through the std::stop_token the work gets; the work is not interrupted, it must look at the
// token between its steps, and the await completes once the work has returned.
#pragma once

#include <memory>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "asio/associated_cancellation_slot.hpp"
#include "asio/associated_executor.hpp"
#include "asio/async_result.hpp"
#include "asio/dispatch.hpp"
#include "asio/post.hpp"
#include "asio/use_awaitable.hpp"

namespace cnp {

template <class Executor, class Work, class CompletionToken = asio::use_awaitable_t<>>
auto RunBlocking(Executor executor, Work work, CompletionToken&& token = {}) {
  using Result = std::invoke_result_t<Work&, std::stop_token>;
  return asio::async_initiate<CompletionToken, void(Result)>(
      [executor](auto handler, Work work) {
        auto stop = std::make_shared<std::stop_source>();
        auto slot = asio::get_associated_cancellation_slot(handler);
        if (slot.is_connected()) {
          slot.assign([stop](asio::cancellation_type type) {
            if (type != asio::cancellation_type::none) stop->request_stop();
          });
        }
        auto back = asio::get_associated_executor(handler);
        asio::post(executor, [work = std::move(work), handler = std::move(handler), stop,
                              back]() mutable {
          Result result = work(stop->get_token());
          asio::dispatch(back, [handler = std::move(handler), stop,
                                result = std::move(result)]() mutable {
            // Back on the awaiting side, where the slot may be touched.
            asio::get_associated_cancellation_slot(handler).clear();
            std::move(handler)(std::move(result));
          });
        });
      },
      token, std::move(work));
}

}  // namespace cnp
