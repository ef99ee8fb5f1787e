#include "adapter/direct_session.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/couchdb/line_io.h"
#include "service/common/framing.h"
#include "session.pb.h"

namespace cnp::adapter {
namespace {

constexpr int kStdin = 0;
constexpr int kStdout = 1;

using session::v1::Answer;

enum class Connected { kYes, kNobodyListens, kBacklogFull };

// A unix socket's non-blocking connect does not complete later: it fails with EAGAIN while the
// listener's backlog is full, and is tried again until `deadline`.
Connected ConnectBy(int fd, const sockaddr_un& address, absl::Time deadline) {
  for (;;) {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
      return Connected::kYes;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return Connected::kNobodyListens;
    if (absl::Now() >= deadline) return Connected::kBacklogFull;
    absl::SleepFor(std::min(absl::Milliseconds(10), deadline - absl::Now()));
  }
}

// What the hello offers: CouchDB's pipes, or nothing (a question about the settings).
enum class Offering { kPipes, kSettingsOnly };

absl::StatusOr<DirectOffer> Offer(const std::string& socket_path, const std::string& settings,
                                  int64_t max_line_bytes, const SocketTrust& trust,
                                  absl::Time deadline, Offering offering) {
  DirectOffer offer;
  sockaddr_un address{};
  if (socket_path.size() >= sizeof(address.sun_path)) return offer;  // kNoSocket
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, socket_path.c_str(), socket_path.size() + 1);
  // Non-blocking from the start: a connect to a listener whose backlog is full (many adapters
  // at once, a server stopped with SIGSTOP) would block past CouchDB's timeout.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  switch (ConnectBy(fd, address, deadline)) {
    case Connected::kYes:
      break;
    case Connected::kNobodyListens:
      ::close(fd);
      return offer;  // kNoSocket: no server with direct sessions there
    case Connected::kBacklogFull:
      ::close(fd);
      // CouchDB's pipes are untouched: the stream path may still be served.
      offer.outcome = DirectOffer::Outcome::kUseStream;
      offer.reason = absl::StrCat("cnp-server did not accept a connection on ", socket_path,
                                  " in time (its backlog stayed full: overloaded, or stopped)");
      return offer;
  }
  // Who listens here, as the kernel says: CouchDB's pipes go only to a server we trust.
  ucred peer{};
  socklen_t peer_size = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_size) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot tell who listens on ", socket_path, " (SO_PEERCRED: ", std::strerror(error),
        "), so CouchDB's pipes are not handed to it"));
  }
  if (absl::Status s = trust.CheckPeer(peer.uid, socket_path); !s.ok()) {
    ::close(fd);
    return s;
  }
  offer.server_pid = peer.pid;

  session::v1::Hello hello;
  hello.set_settings(settings);
  hello.set_adapter_pid(::getpid());
  hello.set_max_line_bytes(max_line_bytes);
  hello.set_answer_within_ms(
      std::max<int64_t>(1, absl::ToInt64Milliseconds(deadline - absl::Now())));
  hello.set_settings_only(offering == Offering::kSettingsOnly);
  const std::vector<int> pipes =
      offering == Offering::kPipes ? std::vector<int>{kStdin, kStdout} : std::vector<int>{};
  std::string frame;
  const absl::Status sent =
      WriteFrameWithDescriptors(fd, hello.SerializeAsString(), pipes, deadline);
  // A server that refuses this adapter (its uid) answers at once and closes without reading
  // the hello, so the hello may fail to go out (EPIPE, or ECONNRESET after a part of it) with
  // the refusal and its reason waiting to be read: read it, and report the write's failure
  // only when there is no answer.
  absl::Status status = ReadFrame(fd, frame, deadline);
  if (!status.ok() && !sent.ok()) status = sent;
  Answer answer;
  if (status.ok() && !answer.ParseFromString(frame)) {
    status = absl::DataLossError("a malformed answer");
  }
  if (!status.ok()) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("the direct session at ", socket_path,
                                               " did not answer: ", status.message()));
  }
  offer.reason = answer.reason();
  offer.report_settings_mismatch = answer.report_settings_mismatch();
  offer.server_settings = answer.settings();
  switch (answer.outcome()) {
    case Answer::ACCEPTED:
      if (offering == Offering::kSettingsOnly) {  // (no pipes went: nothing to serve)
        offer.outcome = DirectOffer::Outcome::kSettingsAgree;
        break;
      }
      offer.outcome = DirectOffer::Outcome::kAccepted;
      offer.socket = fd;
      return offer;
    case Answer::AT_CAPACITY:
    case Answer::UNAVAILABLE:
      offer.outcome = DirectOffer::Outcome::kUseStream;
      break;
    case Answer::SETTINGS_DIFFER:
      offer.outcome = DirectOffer::Outcome::kSettingsDiffer;
      break;
    case Answer::SETTINGS_AGREE:
      offer.outcome = DirectOffer::Outcome::kSettingsAgree;
      break;
    case Answer::REFUSED:
      offer.outcome = DirectOffer::Outcome::kRefused;
      if (offer.reason.empty()) offer.reason = "(no reason given)";
      break;
    default:
      // An answer this adapter does not know (a newer server's): unless it says ACCEPTED the
      // server has closed its copies of the pipes (session.proto), so the stream may serve.
      offer.outcome = DirectOffer::Outcome::kUseStream;
      offer.reason = absl::StrCat("cnp-server answered the direct session with an outcome "
                                  "this adapter does not know (", answer.outcome(), ")");
      break;
  }
  ::close(fd);
  return offer;
}

}  // namespace

absl::StatusOr<DirectOffer> OfferDirectSession(const std::string& socket_path,
                                               const std::string& settings,
                                               int64_t max_line_bytes, const SocketTrust& trust,
                                               absl::Time deadline) {
  return Offer(socket_path, settings, max_line_bytes, trust, deadline, Offering::kPipes);
}

absl::StatusOr<DirectOffer> AskServerSettings(const std::string& socket_path,
                                              const std::string& settings,
                                              const SocketTrust& trust, absl::Time deadline) {
  return Offer(socket_path, settings, /*max_line_bytes=*/0, trust, deadline,
               Offering::kSettingsOnly);
}

SessionEnd WaitForSessionEnd(int socket) {
  std::string frame;
  session::v1::Ended ended;
  absl::Status status = ReadFrame(socket, frame);
  ::close(socket);
  SessionEnd end;
  if (!status.ok() || !ended.ParseFromString(frame)) {
    std::cerr << "cnp-adapter: the connection to cnp-server broke during a direct session ("
              << (status.ok() ? "a malformed message" : status.message())
              << "); the server stopped or was killed, so this query server ends" << std::endl;
    return end;
  }
  if (!ended.error_line().empty()) {
    couchdb::WriteAll(kStdout, ended.error_line() + "\n").IgnoreError();
  }
  // A server that stops ends its sessions between commands: CouchDB's log says why this query
  // server went away, though nothing went wrong.
  if ((ended.exit_code() != 0 || ended.server_stopping()) && !ended.message().empty()) {
    std::cerr << "cnp-adapter: " << ended.message() << std::endl;
  }
  end.exit_code = ended.exit_code();
  end.pipes_untouched = ended.pipes_untouched();
  return end;
}

}  // namespace cnp::adapter
