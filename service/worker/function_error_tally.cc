#include "service/worker/function_error_tally.h"

#include <poll.h>
#include <time.h>

#include <algorithm>

#include "service/common/framing.h"
#include "service/common/log.h"
#include "service/common/function_errors.h"
#include "service/worker/answered_task.h"
#include "service/worker/forked_child.h"
#include "service/worker/function_name.h"
#include "worker.pb.h"

namespace cnp::worker {
namespace {

// A name this worker runs always fits what the server accepts of a frame.
static_assert(kMaxProgressNameBytes == kMaxFunctionNameBytes);

constexpr int64_t kFrameIntervalNs = 1'000'000'000;

int64_t CoarseNowNs() {
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);  // vDSO: no system call
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

}  // namespace

void FunctionErrorTally::Count(absl::string_view function) {
  if (auto it = pending_.find(function); it != pending_.end()) {
    ++it->second;
    return;
  }
  // The frame's bounds (function_errors.h): past them, "other", as the metric itself does.
  if (static_cast<int>(pending_.size()) >= kMaxProgressFunctions - 1 ||
      function.size() > kMaxProgressNameBytes) {
    function = kOtherFunctions;
  }
  ++pending_[function];
}

void FunctionErrorTally::BeforeWaiting(int input) {
  if (pending_.empty() || server_gone_) return;
  const int64_t now = CoarseNowNs();
  const int64_t due_in = last_sent_ns_ + kFrameIntervalNs - now;
  if (due_in > 0) {
    // Rounded up, so the wake-up is never early; CouchDB's line ends the wait.
    pollfd ready{input, POLLIN, 0};
    const int timeout_ms = static_cast<int>(std::min<int64_t>(due_in / 1'000'000 + 1, 1000));
    if (::poll(&ready, 1, timeout_ms) != 0) return;  // the line (or an error) comes first
  }
  Send(CoarseNowNs());
}

void FunctionErrorTally::Flush() {
  if (!pending_.empty() && !server_gone_) Send(CoarseNowNs());
}

void FunctionErrorTally::Send(int64_t now_ns) {
  v1::Reply reply;
  v1::SessionProgress& progress = *reply.mutable_session_progress();
  for (const auto& [function, count] : pending_) {
    v1::FunctionErrorCount& entry = *progress.add_function_errors();
    entry.set_function(function);
    entry.set_count(count);
  }
  pending_.clear();
  last_sent_ns_ = now_ns;
  StampAnswer(reply);
  LeaveIfForkedChild();
  if (absl::Status written = WriteFrame(server_, reply.SerializeAsString()); !written.ok()) {
    // The server is gone (it kills this worker next); CouchDB is still served meanwhile.
    // Once (server_gone_), through the log: in --log-format's form like every worker line.
    LogWarning("cannot send a session's function errors to the server: ", written.message());
    server_gone_ = true;
  }
}

}  // namespace cnp::worker
