// Periodic work on an Asio context, as a coroutine: `work` runs every `period` until it returns
// false or the context stops (its timer is cancelled). For the server's housekeeping on the
// control loop (trimming the heap, capping the log file): a few microseconds each time, never
// on a call's path.
#pragma once

#include <chrono>
#include <functional>

#include "asio/awaitable.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"

namespace cnp {

inline asio::awaitable<void> Every(std::chrono::steady_clock::duration period,
                                   std::function<bool()> work) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (;;) {
    timer.expires_after(period);
    asio::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !work()) co_return;
  }
}

}  // namespace cnp
