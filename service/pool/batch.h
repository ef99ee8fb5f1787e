// The state of one RunAll, shared by its feeders (one per worker it holds). RunAll returns at
// the first task that fails, without waiting for the tasks still running (their answers are
// dropped); the batch lives on until its last feeder ends (AsyncWorkerPool::RunAllHere).
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "asio/cancellation_signal.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "service/pool/worker.h"

namespace cnp::pool {

struct Batch {
  Batch(std::vector<Task> tasks, absl::Time deadline, asio::io_context& context)
      : tasks(std::move(tasks)), deadline(deadline), results(this->tasks.size()),
        answered(this->tasks.size(), false), wake(context) {
    wake.expires_at(asio::steady_timer::time_point::max());
  }
  std::vector<Task> tasks;
  absl::Time deadline;
  std::vector<absl::StatusOr<Reply>> results;
  std::vector<bool> answered;  // results[i] holds task i's own outcome
  size_t next = 0;        // the next task a feeder takes
  absl::Status stopped;   // set when the tasks left will not run: why
  int feeding = 0;        // feeders still running
  asio::steady_timer wake;  // cancelled when the last feeder ends, or when the batch stops
  // One per feeder: cancelling the batch cancels them all.
  std::unique_ptr<asio::cancellation_signal[]> signals;
  // Feeders waiting for a worker (a late one, for a worker a session keeps; or one that gave
  // its worker to another caller): cancelled once the batch no longer needs them (every task
  // taken, or the batch stopped), so that none holds it up or takes a worker for nothing.
  std::vector<asio::cancellation_signal*> waiting;

  // No feeder waiting for a worker is of use any more.
  void ReleaseWaiting() {
    for (asio::cancellation_signal* signal : std::exchange(waiting, {})) {
      signal->emit(asio::cancellation_type::terminal);
    }
  }
  // The tasks left will not run, for `why` (the first reason stays); RunAllHere is woken.
  void Stop(const absl::Status& why) {
    if (!stopped.ok()) return;
    stopped = why;
    ReleaseWaiting();
    wake.cancel();
  }
};

}  // namespace cnp::pool
