// The server's log file kept to a size. A server that cnp-adapter started (and any server whose
// stderr an operator pointed at a file) writes its own lines, its workers' and what functions
// print to one file, which nothing rotated while it ran: a busy session logging every document
// wrote about 60 KB/s. So the server looks at the file now and then, and once it is past
// --log-max-bytes copies it to PATH.1 (replacing the one before) and empties it, as logrotate's
// copytruncate does: the workers, which write to the same open file, go on at its new start.
// Lines written during the copy are lost. Nothing is done when stderr is not a regular file (a
// terminal, a pipe, journald's socket).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace cnp {

// When `fd` is a regular file larger than `max_bytes`: copies it to its path + ".1" and empties
// it, and returns that path. Nothing (and nothing done) when it is not over, not a regular
// file, or deleted. An error says why the file could not be copied or emptied.
absl::StatusOr<std::optional<std::string>> RotateLogFileIfOver(int fd, int64_t max_bytes);

}  // namespace cnp
