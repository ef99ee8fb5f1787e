// The access log: one line for every refused connection or call and every Upload, naming the
// peer, so an operator can see who tried what. Lines go to a file of their own
// (--access-log) or to the server's log on stderr, whatever the log level. Secrets (tokens,
// CouchDB passwords) never appear in it.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "service/common/log.h"

namespace cnp::rpc {

class AccessLog {
 public:
  // Appends to `path` (created 0600), or writes to stderr when `path` is empty.
  static absl::StatusOr<std::unique_ptr<AccessLog>> Open(const std::string& path);
  ~AccessLog();

  // Opens the path anew, by the same rules as Open, and writes there from now on: after a
  // rotation renamed the file (logrotate's `create` and `kill -HUP`), lines go to the new one.
  // Safe while other threads write: each line lands whole in the old file or in the new.
  // Writing to stderr, it does nothing. On an error the log goes on in the file it had.
  absl::Status Reopen() const;

  // In the server's log format (--log-format): "<time> ACCESS cnp-server[pid] <event>
  // peer=<peer> key=value...", or {"ts","level":"ACCESS","pid","msg":<event>,"peer",key...}
  // in JSON. One write per line, so lines from several threads never interleave; control
  // characters in the parts are escaped.
  void Write(absl::string_view event, absl::string_view peer,
             std::initializer_list<LogField> details) const;
  void Write(absl::string_view event, absl::string_view peer,
             absl::Span<const LogField> details) const;

 private:
  AccessLog(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  // Fixed for the log's life; Reopen points it at another file.
  const int fd_;
  const std::string path_;  // empty: stderr
};

}  // namespace cnp::rpc
