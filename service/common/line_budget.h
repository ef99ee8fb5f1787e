// Lines of one sort written to the service's log, at most so many and so many bytes a second,
// whoever makes them: functions' log() lines and exceptions (function_log.h), gRPC's own lines
// (grpc_log.h). What is left out is counted, and said by the next second's first line.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/time/clock.h"
#include "service/common/log.h"

namespace cnp {

// At most `limit` lines and `byte_limit` bytes a second of one sort reach the log; the lines
// left out are counted, and the next second's first line says how many (`what`, then `note`).
// Lines made on every document or connection (a function that logs or raises on each, a
// client failing TLS handshakes in a loop) would otherwise make the log, and the thread
// writing it, the bottleneck, and fill the disk under it.
class LineBudget {
 public:
  LineBudget(int64_t limit, int64_t byte_limit, const char* what, const char* note = "")
      : limit_(limit), byte_limit_(byte_limit), what_(what), note_(note) {}

  // Whether the next line may be written; `format` makes it (its bytes, as written, are
  // counted) and is called only while this second has room, so that a flood of lines left out
  // costs no formatting.
  bool Admit(absl::FunctionRef<size_t()> format) {
    const int64_t now = absl::ToUnixSeconds(absl::Now());
    if (int64_t was = second_.load(std::memory_order_relaxed);
        was != now && second_.compare_exchange_strong(was, now, std::memory_order_relaxed)) {
      lines_.store(0, std::memory_order_relaxed);
      bytes_.store(0, std::memory_order_relaxed);
      if (const int64_t left_out = dropped_.exchange(0, std::memory_order_relaxed);
          left_out > 0) {
        LogWarning(left_out, " ", what_,
                   " were left out of this log in the last second(s) (at most ", limit_,
                   " lines and ", byte_limit_ >> 10,
                   " KiB a second)", note_);
      }
    }
    if (lines_.fetch_add(1, std::memory_order_relaxed) < limit_ &&
        bytes_.load(std::memory_order_relaxed) < byte_limit_) {
      const int64_t bytes = static_cast<int64_t>(format());
      if (bytes_.fetch_add(bytes, std::memory_order_relaxed) + bytes <= byte_limit_) return true;
    }
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  // Counts `lines` left out before they reached Admit (a holder that had no room for them): the
  // next second's first line says so with the others.
  void CountLeftOut(int64_t lines) { dropped_.fetch_add(lines, std::memory_order_relaxed); }

  // Admit, then write the line `format` makes to the log (LogDescriptor()); `format` returns ""
  // for a line below the log level, which is not written.
  void Write(absl::FunctionRef<std::string()> format) {
    std::string line;
    if (Admit([&] {
          line = format();
          return line.size();
        }) &&
        !line.empty()) {
      WriteLogLine(LogDescriptor(), line);
    }
  }

 private:
  const int64_t limit_;
  const int64_t byte_limit_;
  const char* const what_;
  const char* const note_;
  std::atomic<int64_t> second_{0};
  std::atomic<int64_t> lines_{0};
  std::atomic<int64_t> bytes_{0};
  std::atomic<int64_t> dropped_{0};
};

}  // namespace cnp
