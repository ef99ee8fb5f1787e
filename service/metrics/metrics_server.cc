#include "service/metrics/metrics_server.h"

#include <microhttpd.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/unix_target.h"
#include "service/common/log.h"
#include "service/metrics/connection_deadline.h"
#include "service/metrics/registry.h"
#include "service/metrics/service_metrics.h"
#include "service/listen/listening_socket.h"

namespace cnp::metrics {
namespace {

// Scrapers are few: a handful of connections, dropped when idle, is all this port needs. A
// scrape is answered in milliseconds, so a connection silent for seconds is no scraper; and
// every local user can connect, so the slots go back to scrapers soon after a flood.
constexpr unsigned kMaxConnections = 64;
constexpr unsigned kIdleTimeoutSeconds = 3;
// Nor is one without its request after a second, or unanswered five seconds after it, silent
// or not: clients that send a byte a second are never idle for kIdleTimeoutSeconds, and 64 of
// them held every slot (connection_deadline.h). A scraper waiting behind them (its connection
// queued by the kernel) is served once they are closed, within Prometheus's default scrape
// timeout of 10 s: 200 of them now keep it waiting about 4 s (15 s before the request's own
// deadline).
constexpr absl::Duration kRequestDeadline = absl::Seconds(1);
constexpr absl::Duration kAnswerDeadline = absl::Seconds(5);
constexpr absl::Duration kDeadlineSweep = absl::Milliseconds(250);

MHD_Result Reply(MHD_Connection* connection, unsigned status, std::string body,
                 const char* content_type) {
  MHD_Response* response =
      MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  // One request per connection: a connection kept alive between scrapes would meet its
  // deadline (kAnswerDeadline) in the middle of one. A scraper connects anew each time.
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

MHD_Result Answer(void* deadline, MHD_Connection* connection, const char* url,
                  const char* method, const char*, const char*, size_t* upload_size,
                  void** request_seen) {
  // The request's headers have come: the longer deadline, from now. Once per request, not at
  // each piece of a body it may be called again for, which would push the deadline on for as
  // long as a body trickled in (every request is answered at its first call today, so none
  // does; this keeps it so if that changes).
  if (*request_seen == nullptr) {
    *request_seen = deadline;
    if (const MHD_ConnectionInfo* info =
            MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD)) {
      static_cast<ConnectionDeadline*>(deadline)->Requested(info->connect_fd);
    }
  }
  if (*upload_size != 0) {
    *upload_size = 0;  // a body is ignored: only GET and HEAD are served
    return MHD_YES;
  }
  if (std::strcmp(url, "/metrics") != 0) {
    return Reply(connection, MHD_HTTP_NOT_FOUND, "only /metrics is served here\n", "text/plain");
  }
  if (std::strcmp(method, "GET") != 0 && std::strcmp(method, "HEAD") != 0) {
    return Reply(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET\n", "text/plain");
  }
  return Reply(connection, MHD_HTTP_OK, Registry::Default().Render(),
               "text/plain; version=0.0.4; charset=utf-8");
}

// libmicrohttpd's own messages (a connection it could not accept, a client that hung up
// half-way) go through the server's log, so that they follow --log-format like every other
// line. Anyone who can connect can make them, one per connection: at most one line per
// kMessageInterval is written, the next one saying how many were left out, so a flood of
// broken connections cannot grow the log as fast as it connects.
constexpr absl::Duration kMessageInterval = absl::Seconds(10);

class MessageThrottle {
 public:
  // Whether to write a message now; `left_out` is then how many were not written before it.
  bool Admit(int64_t& left_out) {
    absl::MutexLock lock(&mu_);  // one thread per bound address calls this
    const absl::Time now = absl::Now();
    if (now - last_ < kMessageInterval) {
      ++left_out_;
      return false;
    }
    last_ = now;
    left_out = left_out_;
    left_out_ = 0;
    return true;
  }

 private:
  absl::Mutex mu_;
  absl::Time last_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t left_out_ ABSL_GUARDED_BY(mu_) = 0;
};

void LogMicrohttpdMessage(void* throttle, const char* format, va_list args) {
  int64_t left_out = 0;
  if (!static_cast<MessageThrottle*>(throttle)->Admit(left_out)) return;
  char message[1024];
  std::vsnprintf(message, sizeof message, format, args);
  std::string text = message;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (left_out > 0) {
    absl::StrAppend(&text, " (", left_out, " more such messages in the last ",
                    absl::FormatDuration(kMessageInterval), " or before, not written)");
  }
  LogWarning("metrics endpoint (libmicrohttpd): ", text);
}

MessageThrottle& Throttle() {
  static MessageThrottle* const throttle = new MessageThrottle;
  return *throttle;
}

// Registers each connection with the deadline as it starts and ends (on the daemon's thread).
void NotifyConnection(void* deadline, MHD_Connection* connection, void**,
                      MHD_ConnectionNotificationCode code) {
  const MHD_ConnectionInfo* info =
      MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (info == nullptr) return;
  auto& connections = *static_cast<ConnectionDeadline*>(deadline);
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    connections.Started(info->connect_fd);
  } else {
    connections.Ended(info->connect_fd);
  }
}

}  // namespace

absl::Status MetricsServer::Start(const std::string& address, bool public_allowed) {
  if (IsUnixTarget(address)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--metrics-listen=", address, ": give host:port; Prometheus scrapes over TCP"));
  }
  absl::StatusOr<std::vector<listen::ListeningSocket>> sockets =
      listen::OpenListeningSockets(address, {});
  if (!sockets.ok()) {
    return absl::Status(sockets.status().code(),
                        absl::StrCat("--metrics-listen: ", sockets.status().message()));
  }
  for (const listen::ListeningSocket& socket : *sockets) {
    if (!socket.loopback && !public_allowed) {
      for (const listen::ListeningSocket& s : *sockets) ::close(s.fd);
      return absl::FailedPreconditionError(absl::StrCat(
          "--metrics-listen=", address, " is not a loopback address, and the metrics name "
          "functions: listen on 127.0.0.1 behind a scraper on the same host, or pass "
          "--metrics-public if every host that can reach it may read them"));
    }
  }
  port_ = sockets->front().port;
  DeclareAll();
  deadline_ =
      std::make_unique<ConnectionDeadline>(kRequestDeadline, kAnswerDeadline, kDeadlineSweep);
  for (size_t i = 0; i < sockets->size(); ++i) {
    const listen::ListeningSocket& socket = (*sockets)[i];
    // poll, not epoll: level-triggered, it sees at once a client that hung up before its
    // connection was accepted, where edge-triggered epoll waited for the idle timeout (200
    // such connections kept a scraper out for two minutes).
    // MHD_USE_ITC: the daemon's thread is woken through a pipe, which MHD_quiesce_daemon
    // needs in order to hand the listening socket back (without it the call fails, says so,
    // and the socket was never closed).
    MHD_Daemon* daemon = MHD_start_daemon(
        MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG, 0, nullptr, nullptr,
        &Answer, deadline_.get(), MHD_OPTION_EXTERNAL_LOGGER, &LogMicrohttpdMessage, &Throttle(),
        MHD_OPTION_LISTEN_SOCKET, socket.fd, MHD_OPTION_CONNECTION_LIMIT, kMaxConnections,
        MHD_OPTION_CONNECTION_TIMEOUT, kIdleTimeoutSeconds, MHD_OPTION_NOTIFY_CONNECTION,
        &NotifyConnection, deadline_.get(), MHD_OPTION_END);
    if (daemon == nullptr) {
      // Not socket.fd: libmicrohttpd closes it on some of its failures and not on others, and
      // closing it twice could close a descriptor another thread has opened since. The ones
      // not handed over yet are ours.
      for (size_t j = i + 1; j < sockets->size(); ++j) ::close((*sockets)[j].fd);
      Stop();
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", address, ": libmicrohttpd did not start"));
    }
    daemons_.push_back(daemon);
  }
  return absl::OkStatus();
}

void MetricsServer::Stop() {
  for (MHD_Daemon* daemon : daemons_) {
    // MHD_stop_daemon leaves the listening socket open: it is ours to close.
    const MHD_socket fd = MHD_quiesce_daemon(daemon);
    MHD_stop_daemon(daemon);
    if (fd != MHD_INVALID_SOCKET) ::close(fd);
  }
  daemons_.clear();
  deadline_.reset();  // after the daemons, whose connections it was told of
}

}  // namespace cnp::metrics
