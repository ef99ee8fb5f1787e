// Runs a piece of work on the thread of an io_context that owns some state, from any thread, and
// returns once it has run: how a stop or shutdown called from outside the loop touches what the
// loop's coroutines touch without a lock.
#pragma once

#include <future>
#include <utility>

#include "asio/io_context.hpp"
#include "asio/post.hpp"

namespace cnp {

// On the loop's own thread, or with the loop stopped, nothing else can touch its state: `work`
// runs at once (posting would wait for a turn that never comes). Otherwise it is posted, and
// this waits for it; the loop must then be running.
template <class Work>
void RunOnLoop(asio::io_context& loop, Work&& work) {
  if (loop.get_executor().running_in_this_thread() || loop.stopped()) {
    std::forward<Work>(work)();
    return;
  }
  std::promise<void> done;
  asio::post(loop, [&work, &done] {
    std::forward<Work>(work)();
    done.set_value();
  });
  done.get_future().wait();
}

}  // namespace cnp
