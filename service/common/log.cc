#include "service/common/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/printable_text.h"

namespace cnp {
namespace {
std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::atomic<LogFormat> g_format{LogFormat::kText};
std::atomic<const char*> g_program{"cnp-server"};
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

// A JSON string literal: quotes, backslashes and control characters escaped, so that a message
// holding a newline stays on its line. Other bytes pass through (messages are UTF-8).
void AppendJsonString(absl::string_view text, std::string& out) {
  out += '"';
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          absl::StrAppend(&out, absl::StrFormat("\\u%04x", c));
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

bool HasControlCharacter(absl::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(level); }
void SetLogFormat(LogFormat format) { g_format.store(format); }
void SetLogProgram(const char* name) { g_program.store(name); }

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

std::string FormatLine(absl::string_view tag, absl::string_view message,
                       absl::Span<const LogField> fields) {
  const std::string time =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  std::string line;
  if (g_format.load(std::memory_order_relaxed) == LogFormat::kJson) {
    absl::StrAppend(&line, "{\"ts\":\"", time, "\",\"level\":\"", tag,
                    "\",\"pid\":", ::getpid(), ",\"msg\":");
    AppendJsonString(message, line);
    for (const LogField& field : fields) {
      if (field.value.empty()) continue;
      line += ',';
      AppendJsonString(field.key, line);
      line += ':';
      AppendJsonString(field.value, line);
    }
    line += "}\n";
  } else {
    absl::StrAppend(&line, time, " ", tag, " ", g_program.load(std::memory_order_relaxed),
                    "[", ::getpid(), "] ");
    AppendPrintable(message, line);
    for (const LogField& field : fields) {
      if (field.value.empty()) continue;
      absl::StrAppend(&line, " ", field.key, "=");
      if (absl::StrContains(field.value, ' ') || absl::StrContains(field.value, '"') ||
          HasControlCharacter(field.value)) {
        AppendJsonString(field.value, line);
      } else {
        absl::StrAppend(&line, field.value);
      }
    }
    line += '\n';
  }
  return line;
}

}  // namespace

std::string FormatLogLine(absl::string_view tag, absl::string_view message,
                          absl::Span<const LogField> fields) {
  return FormatLine(tag, message, fields);
}

void LogEvent(LogLevel level, absl::string_view message,
              std::initializer_list<LogField> event_fields) {
  if (level < g_level.load(std::memory_order_relaxed)) return;
  // Lines that carry fields are about a request: name its RPC and peer too. Plain lines get
  // no fields added.
  std::vector<LogField> fields(event_fields);
  std::string peer;
  if (!fields.empty() && t_call != nullptr) {
    peer = t_call->peer();
    fields.push_back({"rpc", t_call->rpc()});
    fields.push_back({"peer", peer});
  }
  const std::string line = FormatLine(Name(level), message, fields);
  // One write per line so that lines from several threads never interleave.
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace cnp
