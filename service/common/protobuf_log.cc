#include "service/common/protobuf_log.h"

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/stubs/logging.h"
#include "service/common/log.h"

namespace cnp {
namespace {

thread_local ProtobufLogCapture* current_capture = nullptr;

// The places in protobuf's code that logged, each with its last line's time and the lines
// left out since. Bounded: protobuf has only so many places that log.
class RateLimitedProtobufLog {
 public:
  using Clock = std::chrono::steady_clock;

  RateLimitedProtobufLog(Clock::duration interval, ProtobufLogClock now)
      : interval_(interval), now_(now) {}

  void Write(LogLevel level, std::string place, absl::string_view message) {
    const Clock::time_point now = now_();
    int64_t left_out = 0;
    {
      absl::MutexLock lock(&mu_);
      auto [it, first] = places_.try_emplace(std::move(place));
      Place& at = it->second;
      if (!first && now - at.last_line < interval_) {
        ++at.left_out;
        return;
      }
      at.last_line = now;
      left_out = std::exchange(at.left_out, 0);
    }
    std::string line = absl::StrCat("protobuf: ", absl::StripAsciiWhitespace(message));
    if (left_out > 0) {
      absl::StrAppend(&line, " (and ", left_out, " more such line", left_out == 1 ? "" : "s",
                      " left out since the last one: at most one per ",
                      std::chrono::duration_cast<std::chrono::seconds>(interval_).count(), " s)");
    }
    LogLine(level, line);
  }

 private:
  struct Place {
    Clock::time_point last_line;
    int64_t left_out = 0;
  };
  const Clock::duration interval_;
  const ProtobufLogClock now_;
  absl::Mutex mu_;
  std::map<std::string, Place> places_ ABSL_GUARDED_BY(mu_);
};

absl::once_flag installed;
RateLimitedProtobufLog* rate_limited = nullptr;  // set once, before the handler; never freed

LogLevel LevelOf(google::protobuf::LogLevel level) {
  switch (level) {
    case google::protobuf::LOGLEVEL_INFO:
      return LogLevel::kInfo;
    case google::protobuf::LOGLEVEL_WARNING:
      return LogLevel::kWarning;
    default:
      return LogLevel::kError;
  }
}

void HandleProtobufLine(google::protobuf::LogLevel level, const char* filename, int line,
                        const std::string& message) {
  // protobuf aborts after a fatal line: it goes to the log even while a parse is captured.
  if (current_capture != nullptr && level != google::protobuf::LOGLEVEL_FATAL) {
    current_capture->Append(message);
    return;
  }
  rate_limited->Write(LevelOf(level), absl::StrCat(filename, ":", line), message);
}

void Install(std::chrono::steady_clock::duration interval, ProtobufLogClock now) {
  absl::call_once(installed, [interval, now] {
    rate_limited = new RateLimitedProtobufLog(interval, now);
    google::protobuf::SetLogHandler(&HandleProtobufLine);
  });
}

}  // namespace

void ProtobufLogCapture::Append(absl::string_view line) {
  if (!text_.empty()) text_ += "; ";
  absl::StrAppend(&text_, absl::StripAsciiWhitespace(line));
}

void RouteProtobufLog(std::chrono::steady_clock::duration interval, ProtobufLogClock now) {
  Install(interval, now);
}

std::string ProtobufLogCapture::Reason() const {
  if (text_.empty()) {
    return "its bytes are not a protobuf message of that type (cut short, or not protobuf at "
           "all)";
  }
  absl::string_view said = text_;
  if (size_t advice = said.find(" Use the 'bytes' type"); advice != absl::string_view::npos) {
    return absl::StrCat(said.substr(0, advice), " (proto3 string fields hold UTF-8 only)");
  }
  return text_;
}

ProtobufLogCapture::ProtobufLogCapture() : previous_(current_capture) {
  Install(kProtobufLogInterval, &std::chrono::steady_clock::now);
  current_capture = this;
}

ProtobufLogCapture::~ProtobufLogCapture() { current_capture = previous_; }

}  // namespace cnp
