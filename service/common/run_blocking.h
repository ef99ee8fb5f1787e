// Runs code that blocks (a synchronous HTTP client, a synchronous task runner) on an executor
// whose threads may block - an asio::thread_pool the server owns - and awaits its result from a
// coroutine without blocking the coroutine's thread.
//
//   absl::Status status = co_await RunBlocking(upload_pool.get_executor(),
//       [&](std::stop_token stop) { return uploader.Run(request, emit, stop); },
//       absl::CancelledError("cancelled before an upload thread was free"));
//
// The result comes back on the awaiting coroutine's own executor. Cancelling the await
// (terminal or partial cancellation through the coroutine's cancellation slot) requests a stop
// through the std::stop_token the work gets; the work is not interrupted, it must look at the
// token between its steps, and the await completes once the work has returned.
//
// A cancellation that comes while the work still waits for a thread of `executor` (they are all
// busy) completes the await at once with `not_started` instead, and the work never runs: a
// caller that is gone holds nothing while it waits its turn (an Upload's place among the
// waiting calls, which every other client needs). The work object is then destroyed unrun on
// one of `executor`'s threads when its turn comes, possibly after the awaiting coroutine has
// ended: its destruction must touch nothing the coroutine owns (a lambda capturing by
// reference is fine; it is never called).
#pragma once

#include <atomic>
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
namespace run_blocking_internal {

// Who completes the await, decided once: the thread that takes the work up, or a cancellation
// that came before any did.
enum Phase : int { kQueued, kRunning, kDropped };

template <class Handler>
struct State {
  explicit State(Handler handler) : handler(std::move(handler)) {}
  std::atomic<int> phase{kQueued};
  std::stop_source stop;
  Handler handler;  // called by whoever moved `phase` out of kQueued, on the awaiting side
};

// On the awaiting side, where the slot may be touched.
template <class Handler, class Result>
void Complete(const std::shared_ptr<State<Handler>>& state, Result result) {
  asio::get_associated_cancellation_slot(state->handler).clear();
  std::move(state->handler)(std::move(result));
}

}  // namespace run_blocking_internal

template <class Executor, class Work, class Result, class CompletionToken = asio::use_awaitable_t<>>
auto RunBlocking(Executor executor, Work work, Result not_started, CompletionToken&& token = {}) {
  static_assert(std::is_same_v<Result, std::invoke_result_t<Work&, std::stop_token>>,
                "not_started must be of the type the work returns");
  return asio::async_initiate<CompletionToken, void(Result)>(
      [executor](auto handler, Work work, Result not_started) {
        namespace internal = run_blocking_internal;
        using Handler = std::decay_t<decltype(handler)>;
        auto slot = asio::get_associated_cancellation_slot(handler);
        auto back = asio::get_associated_executor(handler);
        auto state = std::make_shared<internal::State<Handler>>(std::move(handler));
        if (slot.is_connected()) {
          slot.assign([state, back, not_started = std::move(not_started)](
                          asio::cancellation_type type) mutable {
            if (type == asio::cancellation_type::none) return;
            state->stop.request_stop();
            int queued = internal::kQueued;
            if (!state->phase.compare_exchange_strong(queued, internal::kDropped,
                                                      std::memory_order_acq_rel)) {
              return;  // a thread runs the work: it sees the stop and completes the await
            }
            // Posted: this handler lives in the slot, which completing clears.
            asio::post(back, [state, result = std::move(not_started)]() mutable {
              internal::Complete(state, std::move(result));
            });
          });
        }
        asio::post(executor, [state, work = std::move(work), back]() mutable {
          int queued = internal::kQueued;
          if (!state->phase.compare_exchange_strong(queued, internal::kRunning,
                                                    std::memory_order_acq_rel)) {
            return;  // cancelled while it waited for this thread: answered already
          }
          Result result = work(state->stop.get_token());
          asio::dispatch(back, [state, result = std::move(result)]() mutable {
            internal::Complete(state, std::move(result));
          });
        });
      },
      token, std::move(work), std::move(not_started));
}

}  // namespace cnp
