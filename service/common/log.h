// The service's log: one line per event on stderr, with time, severity and what happened.
// Operators read these to learn why a call failed or a worker was replaced, so every line
// should say what happened and why in words. With --log-format=json each line is one JSON
// object instead ({"ts","level","pid","msg"} and the event's fields), for a log collector.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

#include "absl/strings/str_cat.h"

namespace cnp {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Lines below this level are dropped. Set once at start-up.
void SetLogLevel(LogLevel level);
// Whether a line of `level` is written: for a caller that would count or format lines first.
bool LogLevelEnabled(LogLevel level);
bool ParseLogLevel(absl::string_view name, LogLevel& level);

enum class LogFormat { kText, kJson };
void SetLogFormat(LogFormat format);
LogFormat CurrentLogFormat();
bool ParseLogFormat(absl::string_view name, LogFormat& format);

// The program named in text lines ("cnp-server" unless set; workers say "cnp-worker"). Set once
// at start-up; `name` must live as long as the process.
void SetLogProgram(const char* name);

void LogLine(LogLevel level, absl::string_view message);

// A field of an event that a collector may filter on: function, doc_id, peer, rpc...
// `number`: the value is an integer (a uid, a pid, a count), which JSON writes as a number -
// if it is one (an optional minus, digits, no leading zero); anything else stays a string.
struct LogField {
  absl::string_view key;
  absl::string_view value;
  bool number = false;
};
// An event with fields: in text, " key=value" after the message (values quoted when they hold
// spaces, quotes or control characters; control characters in the message escaped); in JSON,
// members of the line's object. Fields with empty values are left out. A call's scope (below)
// adds "rpc" and "peer" unless the event has a field of that name already: a JSON line never
// has a key twice.
void LogEvent(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields);
// LogEvent's line, not written ("" below the log level): for a caller that counts the bytes it
// writes (WriteLogLine to stderr then writes it as LogEvent would).
std::string FormatEvent(LogLevel level, absl::string_view message,
                        std::initializer_list<LogField> fields);

// The longest line written, newline included: journald splits lines past its LineMax (48K by
// default) into pieces no collector reads as JSON, and a function's log() message or traceback
// may be as long as --max-call-bytes. The longest values of a longer line are cut, at a UTF-8
// character's boundary, and the line ends with "truncated":true (in text, " truncated=true").
inline constexpr size_t kMaxLogLineBytes = 16 << 10;

// Lowers the cap for this process (set once at start-up, at least 256 bytes). A process that
// shares its stderr pipe with others (cnp-worker: the server's and every other worker's; the
// server, when its stderr is a pipe or a socket) sets PIPE_BUF: only a write of at most that
// many bytes to a pipe is atomic, and a longer line could be split by another process's line
// landing in the middle of it.
void SetMaxLogLineBytes(size_t bytes);

// A line as LogEvent writes it, in the format set, with `tag` where the severity goes: for a
// log of its own that must read like this one (the access log's "ACCESS"). Ends in a newline.
std::string FormatLogLine(absl::string_view tag, absl::string_view message,
                          absl::Span<const LogField> fields);

// The descriptor LogEvent writes to: stderr unless set, once, at start-up. cnp-worker's
// --log-fd sets it: its stdout and stderr then go to the server, which relays what a function
// or a library writes there raw as events (pool/worker_output_relay.h), and its own lines to
// the log the server gave it.
void SetLogDescriptor(int fd);
int LogDescriptor();

// Writes `line` to `fd` whole: under a lock that every line of the process's log takes (lines
// from several threads never mix, however a full pipe cuts writes short), retrying what a
// short or interrupted write left. For a log of its own (the access log's file).
void WriteLogLine(int fd, absl::string_view line);

// Points `fd` at `replacement`'s file (dup3, close-on-exec) under that same lock: a line being written to a
// log reopened meanwhile lands whole in the old file or whole in the new one, never split
// between them. Returns false (errno set) when that fails; `replacement` is left open.
bool ReplaceLogDescriptor(int fd, int replacement);

// The call this thread is running right now: events logged with fields meanwhile also name its
// RPC and peer. Calls' coroutines interleave on a thread, so a scope is set for one resumption
// at a time and never held across a suspension (service/rpc/call_executor.h sets it). The peer
// is worked out only when such a line is written, so a call that logs nothing pays two pointer
// stores.
class CallLogScope {
 public:
  using PeerOf = std::string (*)(const void* call);
  CallLogScope(const char* rpc, const void* call, PeerOf peer_of);
  ~CallLogScope();
  CallLogScope(const CallLogScope&) = delete;
  CallLogScope& operator=(const CallLogScope&) = delete;

  const char* rpc() const { return rpc_; }
  std::string peer() const { return peer_of_(call_); }

 private:
  const char* rpc_;
  const void* call_;
  PeerOf peer_of_;
  const CallLogScope* previous_;
};

template <typename... Parts>
void LogInfo(const Parts&... parts) { LogLine(LogLevel::kInfo, absl::StrCat(parts...)); }
template <typename... Parts>
void LogWarning(const Parts&... parts) { LogLine(LogLevel::kWarning, absl::StrCat(parts...)); }
template <typename... Parts>
void LogError(const Parts&... parts) { LogLine(LogLevel::kError, absl::StrCat(parts...)); }

}  // namespace cnp
