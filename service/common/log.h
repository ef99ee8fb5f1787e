// The service's log: one line per event on stderr, with time, severity and what happened.
// Operators read these to learn why a call failed or a worker was replaced, so every line
// should say what happened and why in words.
#pragma once

#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"

namespace cnp {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// Lines below this level are dropped. Set once at start-up.
void SetLogLevel(LogLevel level);
bool ParseLogLevel(absl::string_view name, LogLevel& level);

void LogLine(LogLevel level, absl::string_view message);

template <typename... Parts>
void LogInfo(const Parts&... parts) { LogLine(LogLevel::kInfo, absl::StrCat(parts...)); }
template <typename... Parts>
void LogWarning(const Parts&... parts) { LogLine(LogLevel::kWarning, absl::StrCat(parts...)); }
template <typename... Parts>
void LogError(const Parts&... parts) { LogLine(LogLevel::kError, absl::StrCat(parts...)); }

}  // namespace cnp
