// The server's log file kept to a size. A server that cnp-adapter started (and any server whose
// stderr an operator pointed at a file) writes its own lines, its workers' and what functions
// print to one file, which nothing rotated while it ran: a busy session logging every document
// wrote about 60 KB/s. So the server looks at the file now and then, and once it is past
// --log-max-bytes copies it to PATH.1 (replacing the one before) and empties it, as logrotate's
// copytruncate does: the workers, which write to the same open file, go on at its new start.
// The copy reads on to the end as it grows, so only a line written in the instant between its
// last read and the emptying is lost (copytruncate's limit: the workers' writes cannot be
// held). Nothing is done when stderr is not a regular file (a terminal, a pipe, journald's
// socket).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cnp {

// When `fd` is a regular file larger than `max_bytes`: copies it to its path + ".1" and empties
// it, and returns that path; a file that was deleted is emptied alone, and "" returned. Nothing
// (and nothing done) when it is not over or not a regular file. The copy is made beside it
// (".1.tmp") and renamed over ".1" once whole, so
// a copy that fails (a full disk) leaves the ".1" before it as it was. An error says why the
// file could not be copied or emptied.
absl::StatusOr<std::optional<std::string>> RotateLogFileIfOver(int fd, int64_t max_bytes);

// RotateLogFileIfOver, looked at every few seconds, with what it did logged. A rotation that
// failed is tried again a minute later, then twice as long after each failure up to an hour,
// each failure logged: the log of a disk that filled up and was freed is capped again, and a
// failure that lasts writes a few lines an hour, not one each look.
class LogFileCap {
 public:
  static constexpr absl::Duration kFirstRetry = absl::Minutes(1);
  static constexpr absl::Duration kLongestRetry = absl::Hours(1);

  LogFileCap(int fd, int64_t max_bytes) : fd_(fd), max_bytes_(max_bytes) {}
  void Check(absl::Time now);

 private:
  const int fd_;
  const int64_t max_bytes_;
  absl::Duration retry_wait_ = absl::ZeroDuration();
  absl::Time next_try_ = absl::InfinitePast();
};

}  // namespace cnp
