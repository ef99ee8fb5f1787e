#include "service/pool/worker_startup.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/redirect_error.hpp"
#include "asio/steady_timer.hpp"
#include "asio/use_awaitable.hpp"

namespace cnp::pool {
namespace {

const worker::v1::Task& HandshakeTask() {
  static const worker::v1::Task* task = [] {
    auto* t = new worker::v1::Task;
    t->mutable_resolve();
    return t;
  }();
  return *task;
}

}  // namespace

asio::awaitable<absl::Status> AwaitWorkerStartup(WorkerProcess& process, asio::io_context& control,
                                                 absl::Duration timeout) {
  if (absl::Status sent = process.Send(HandshakeTask(), absl::Now() + timeout); !sent.ok()) {
    co_return sent;
  }
  // A duplicate to wait on: the stream_descriptor closes what it holds, the process keeps its own.
  const int watched = ::dup(process.fd());
  if (watched < 0) {
    co_return absl::ResourceExhaustedError(
        absl::StrCat("cannot watch the starting worker: ", std::strerror(errno)));
  }
  asio::posix::stream_descriptor readable(control, watched);
  asio::steady_timer timer(control, absl::ToChronoNanoseconds(timeout));
  timer.async_wait([&readable](asio::error_code ec) {
    if (!ec) readable.cancel();
  });
  asio::error_code ec;
  co_await readable.async_wait(asio::posix::stream_descriptor::wait_read,
                               asio::redirect_error(asio::use_awaitable, ec));
  timer.cancel();
  if (ec) {
    co_return absl::DeadlineExceededError(
        absl::StrCat("it did not answer within ", absl::FormatDuration(timeout)));
  }
  absl::StatusOr<worker::v1::Reply> reply = process.Receive(absl::Now() + absl::Seconds(5));
  if (!reply.ok()) co_return reply.status();
  if (!reply->has_resolve()) {
    co_return absl::InternalError(
        absl::StrCat("its first answer was unexpected: ", reply->ShortDebugString()));
  }
  co_return absl::OkStatus();
}

}  // namespace cnp::pool
