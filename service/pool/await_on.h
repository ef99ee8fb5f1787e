// Awaiting a coroutine that must run on another executor (the pool's), with the awaiting
// coroutine resumed on its own executor and its cancellation carried across.
//
// Asio 1.22's co_spawn connects the awaiting coroutine's cancellation slot straight to the
// spawned coroutine: a cancellation emitted on the caller's thread would then run the spawned
// side's cancellation handlers (closing a timer wait, a socket read) on that thread, racing
// the thread that runs the target executor. Here a cancellation is posted to the target
// executor and emitted there.
#pragma once

#include <exception>
#include <memory>
#include <utility>

#include "asio/any_io_executor.hpp"
#include "asio/associated_cancellation_slot.hpp"
#include "asio/associated_executor.hpp"
#include "asio/async_result.hpp"
#include "asio/awaitable.hpp"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/post.hpp"
#include "asio/use_awaitable.hpp"

namespace cnp::pool {
namespace await_on_internal {

// Lives until both sides are done with it. `signal` is emitted, and `done` read and written,
// only on the target executor.
struct Crossing {
  explicit Crossing(asio::any_io_executor target) : target(std::move(target)) {}
  asio::any_io_executor target;
  asio::cancellation_signal signal;
  bool done = false;
};

template <typename T>
struct Initiate {
  template <typename Handler>
  void operator()(Handler&& handler, asio::awaitable<T> op,
                  std::shared_ptr<Crossing> crossing) const {
    auto caller_slot = asio::get_associated_cancellation_slot(handler);
    auto caller_executor = asio::get_associated_executor(handler);
    if (caller_slot.is_connected()) {
      caller_slot.assign([crossing](asio::cancellation_type type) {
        asio::post(crossing->target, [crossing, type] {
          if (!crossing->done) crossing->signal.emit(type);
        });
      });
    }
    asio::co_spawn(
        crossing->target, std::move(op),
        asio::bind_cancellation_slot(
            crossing->signal.slot(),
            [crossing, caller_slot, caller_executor,
             handler = std::forward<Handler>(handler)](std::exception_ptr e, T value) mutable {
              crossing->done = true;
              asio::post(caller_executor, [caller_slot, handler = std::move(handler), e,
                                           value = std::move(value)]() mutable {
                caller_slot.clear();
                std::move(handler)(e, std::move(value));
              });
            }));
  }
};

}  // namespace await_on_internal

// Runs `op` on `target` and returns its result to the awaiting coroutine, on that coroutine's
// executor. A terminal cancellation of the awaiting coroutine is delivered to `op` on `target`.
template <typename T>
asio::awaitable<T> AwaitOn(asio::any_io_executor target, asio::awaitable<T> op) {
  auto crossing = std::make_shared<await_on_internal::Crossing>(target);
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&,
                                          void(std::exception_ptr, T)>(
      await_on_internal::Initiate<T>{}, asio::use_awaitable, std::move(op), std::move(crossing));
}

}  // namespace cnp::pool
