#include "service/common/log.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <string>
#include <vector>

#include "absl/base/const_init.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/printable_text.h"
#include "common/utf8_text.h"
#include "service/common/absl_view.h"
#include "service/couchdb/json_text.h"

namespace cnp {
namespace {
std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kText};
std::atomic<const char*> g_program{"cnp-server"};
std::atomic<size_t> g_max_line_bytes{kMaxLogLineBytes};
thread_local const CallLogScope* t_call = nullptr;

constexpr absl::string_view Name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARN";
    case LogLevel::kError: return "ERROR";
  }
  return "?";
}

bool HasControlCharacter(absl::string_view text) {
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f || IsC1ControlAt(text, i) || IsLineSeparatorAt(text, i)) return true;
  }
  return false;
}

// `text` as a JSON string that stays UTF-8 (JSON text must be, and a collector drops a line that
// is not): bytes that are not part of a UTF-8 character, as a document id no one checked may
// hold, are written \xNN; the C1 controls, which JSON lets through raw, \u0080 to \u009f, and
// U+2028 and U+2029, which end a line for editors, viewers and JavaScript, \u2028 and \u2029.
void AppendJsonText(std::string& line, absl::string_view text) {
  const size_t start = line.size();
  if (FindInvalidUtf8(text).has_value()) {
    couchdb::AppendJsonString(line, EscapeInvalidUtf8(text));
  } else {
    couchdb::AppendJsonString(line, StdView(text));
  }
  if (line.find('\xc2', start) == std::string::npos &&
      line.find('\xe2', start) == std::string::npos) {
    return;
  }
  const std::string quoted = line.substr(start);
  line.resize(start);
  for (size_t i = 0; i < quoted.size(); ++i) {
    if (IsC1ControlAt(quoted, i)) {
      absl::StrAppendFormat(&line, "\\u%04x", static_cast<unsigned char>(quoted[i + 1]));
      ++i;
    } else if (IsLineSeparatorAt(quoted, i)) {
      absl::StrAppendFormat(&line, "\\u%04x", 0x2000 + static_cast<unsigned char>(quoted[i + 2]) - 0x80);
      i += 2;
    } else {
      line += quoted[i];
    }
  }
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(level); }

bool LogLevelEnabled(LogLevel level) { return level >= g_level.load(std::memory_order_relaxed); }
void SetLogFormat(LogFormat format) { g_format.store(format); }
LogFormat CurrentLogFormat() { return g_format.load(std::memory_order_relaxed); }
void SetLogProgram(const char* name) { g_program.store(name); }
void SetMaxLogLineBytes(size_t bytes) {
  // Below this even a line with every value cut may not fit: its time, level and pid alone.
  constexpr size_t kLeast = 256;
  g_max_line_bytes.store(std::clamp(bytes, kLeast, kMaxLogLineBytes));
}

bool ParseLogFormat(absl::string_view name, LogFormat& format) {
  if (name == "text") format = LogFormat::kText;
  else if (name == "json") format = LogFormat::kJson;
  else return false;
  return true;
}

bool ParseLogLevel(absl::string_view name, LogLevel& level) {
  if (name == "debug") level = LogLevel::kDebug;
  else if (name == "info") level = LogLevel::kInfo;
  else if (name == "warning" || name == "warn") level = LogLevel::kWarning;
  else if (name == "error") level = LogLevel::kError;
  else return false;
  return true;
}

CallLogScope::CallLogScope(const char* rpc, const void* call, PeerOf peer_of)
    : rpc_(rpc), call_(call), peer_of_(peer_of), previous_(t_call) {
  t_call = this;
}

CallLogScope::~CallLogScope() { t_call = previous_; }

void LogLine(LogLevel level, absl::string_view message) { LogEvent(level, message, {}); }

namespace {

// A JSON integer as RFC 8259 writes one: -?(0|[1-9][0-9]*).
bool IsJsonInteger(absl::string_view text) {
  if (absl::ConsumePrefix(&text, "-") && text.empty()) return false;
  if (text.empty() || (text[0] == '0' && text.size() > 1)) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

void AppendLine(absl::string_view time, absl::string_view tag, absl::string_view message,
                absl::Span<const LogField> fields, bool truncated, std::string& line) {
  if (g_format.load(std::memory_order_relaxed) == LogFormat::kJson) {
    absl::StrAppend(&line, "{\"ts\":\"", time, "\",\"level\":\"", tag,
                    "\",\"pid\":", ::getpid(), ",\"msg\":");
    AppendJsonText(line, message);
    for (const LogField& field : fields) {
      if (field.value.empty()) continue;
      line += ',';
      couchdb::AppendJsonString(line, StdView(field.key));
      line += ':';
      if (field.number && IsJsonInteger(field.value)) {
        line.append(field.value.data(), field.value.size());
      } else {
        AppendJsonText(line, field.value);
      }
    }
    if (truncated) line += ",\"truncated\":true";
    line += "}\n";
  } else {
    absl::StrAppend(&line, time, " ", tag, " ", g_program.load(std::memory_order_relaxed),
                    "[", ::getpid(), "] ");
    // A message followed by fields that holds "=" itself (a function's log() text, an
    // exception's message) is quoted: it could otherwise read as fields of its own, ahead of
    // the real ones ("... function=forged doc_id=forged function=real").
    const bool fields_follow = std::any_of(fields.begin(), fields.end(),
                                           [](const LogField& field) { return !field.value.empty(); });
    if (fields_follow && absl::StrContains(message, '=')) {
      AppendJsonText(line, message);
    } else {
      AppendPrintable(message, line);
    }
    for (const LogField& field : fields) {
      if (field.value.empty()) continue;
      absl::StrAppend(&line, " ", field.key, "=");
      if (absl::StrContains(field.value, ' ') || absl::StrContains(field.value, '"') ||
          HasControlCharacter(field.value)) {
        AppendJsonText(line, field.value);
      } else {
        absl::StrAppend(&line, field.value);
      }
    }
    if (truncated) line += " truncated=true";
    line += '\n';
  }
}

// At most `limit` bytes of `text`, not ending inside a UTF-8 character (a collector may refuse
// the whole line for a broken one).
absl::string_view CutAt(absl::string_view text, size_t limit) { return Utf8Prefix(text, limit); }

std::string FormatLine(absl::string_view tag, absl::string_view message,
                       absl::Span<const LogField> fields) {
  const std::string time =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  const size_t cap = g_max_line_bytes.load(std::memory_order_relaxed);
  std::string line;
  AppendLine(time, tag, message, fields, /*truncated=*/false, line);
  if (line.size() <= cap) return line;
  // Cut every value to one length, the longest that fits: the long ones (a message, a
  // traceback) lose their ends, the short ones (function, doc_id, peer) stay whole. Escaping
  // makes a value's length in the line unknown until written, so the length is searched for;
  // no value can keep more than the cap, which bounds each try.
  std::vector<LogField> cut(fields.begin(), fields.end());
  auto format = [&](size_t limit) {
    for (size_t i = 0; i < cut.size(); ++i) cut[i].value = CutAt(fields[i].value, limit);
    line.clear();
    AppendLine(time, tag, CutAt(message, limit), cut, /*truncated=*/true, line);
    return line.size() <= cap;
  };
  size_t fits = 0;
  size_t too_long = cap + 1;
  while (too_long - fits > 1) {
    const size_t limit = fits + (too_long - fits) / 2;
    (format(limit) ? fits : too_long) = limit;
  }
  format(fits);
  return line;
}

// One writer at a time: a write to a full pipe returns part-way, and another thread's line
// would land in the middle of this one. Process-wide, since the access log may share stderr.
ABSL_CONST_INIT absl::Mutex g_write_mutex(absl::kConstInit);

void WriteAllLocked(int fd, absl::string_view line) ABSL_EXCLUSIVE_LOCKS_REQUIRED(g_write_mutex) {
  while (!line.empty()) {
    const ssize_t n = ::write(fd, line.data(), line.size());
    if (n > 0) {
      line.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // A descriptor someone else made non-blocking (a shared terminal or pipe).
      pollfd writable{.fd = fd, .events = POLLOUT, .revents = 0};
      if (::poll(&writable, 1, -1) < 0 && errno != EINTR) return;
    } else {
      return;  // a closed or broken log: nowhere to say so
    }
  }
}

}  // namespace

std::string FormatLogLine(absl::string_view tag, absl::string_view message,
                          absl::Span<const LogField> fields) {
  return FormatLine(tag, message, fields);
}

void WriteLogLine(int fd, absl::string_view line) {
  absl::MutexLock lock(&g_write_mutex);
  WriteAllLocked(fd, line);
}

namespace {
std::atomic<int> g_log_fd{STDERR_FILENO};
}  // namespace

void SetLogDescriptor(int fd) { g_log_fd.store(fd, std::memory_order_relaxed); }
int LogDescriptor() { return g_log_fd.load(std::memory_order_relaxed); }

bool ReplaceLogDescriptor(int fd, int replacement) {
  absl::MutexLock lock(&g_write_mutex);
  // dup3, not dup2: dup2 would clear close-on-exec, and workers would inherit the log.
  while (::dup3(replacement, fd, O_CLOEXEC) < 0) {
    if (errno != EINTR && errno != EBUSY) return false;
  }
  return true;
}

void LogEvent(LogLevel level, absl::string_view message,
              std::initializer_list<LogField> event_fields) {
  const std::string line = FormatEvent(level, message, event_fields);
  if (!line.empty()) WriteLogLine(LogDescriptor(), line);
}

std::string FormatEvent(LogLevel level, absl::string_view message,
                        std::initializer_list<LogField> event_fields) {
  if (level < g_level.load(std::memory_order_relaxed)) return "";
  // Lines that carry fields are about a request: name its RPC and peer too. Plain lines get
  // no fields added.
  std::vector<LogField> fields(event_fields);
  std::string peer;
  if (!fields.empty() && t_call != nullptr) {
    // (An empty field is left out of the line: the scope's value takes its place.)
    auto has = [&](absl::string_view key) {
      return std::any_of(fields.begin(), fields.end(), [&](const LogField& field) {
        return field.key == key && !field.value.empty();
      });
    };
    const bool has_rpc = has("rpc");
    const bool has_peer = has("peer");
    if (!has_rpc) fields.push_back({"rpc", t_call->rpc()});
    if (!has_peer) {
      peer = t_call->peer();
      fields.push_back({"peer", peer});
    }
  }
  return FormatLine(Name(level), message, fields);
}

}  // namespace cnp
