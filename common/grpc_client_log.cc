#include "common/grpc_client_log.h"

#include <unistd.h>

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/printable_text.h"
#include "grpc/support/log.h"

namespace cnp {
namespace {

constexpr absl::Duration kQuietFor = absl::Minutes(1);

struct Spoken {
  absl::Time last = absl::InfinitePast();
  int64_t left_out = 0;  // since `last`
};

// gRPC logs from its own threads as well as the caller's.
struct GrpcLog {
  absl::Mutex mu;
  std::string program ABSL_GUARDED_BY(mu);
  // One entry per source line of gRPC's that logged: a bounded set.
  absl::flat_hash_map<std::string, Spoken> spoken ABSL_GUARDED_BY(mu);
};

GrpcLog& TheLog() {
  static GrpcLog* log = new GrpcLog;
  return *log;
}

void WriteStderr(const std::string& line) {
  for (size_t written = 0; written < line.size();) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + written, line.size() - written);
    if (n <= 0) return;  // stderr gone: nothing else to tell
    written += static_cast<size_t>(n);
  }
}

// gRPC's own words for a health Watch refused UNIMPLEMENTED, which cnp-server answers once its
// Watch streams are all taken (by anyone: they need no token): not an error of this program's.
constexpr absl::string_view kWatchUnimplemented =
    "health checking Watch method returned UNIMPLEMENTED";

void LogLine(gpr_log_func_args* args) {
  absl::string_view message = args->message != nullptr ? args->message : "";
  gpr_log_severity severity_level = args->severity;
  if (absl::StartsWith(message, kWatchUnimplemented)) {
    message = "a server refused to let this client watch its health (UNIMPLEMENTED: "
              "cnp-server does so when all its health Watch streams are taken): its connection "
              "is taken for serving, without health checks, until it reconnects";
    severity_level = GPR_LOG_SEVERITY_INFO;
  }
  absl::string_view file = args->file != nullptr ? args->file : "";
  if (const size_t slash = file.rfind('/'); slash != absl::string_view::npos) {
    file.remove_prefix(slash + 1);
  }
  const std::string source = absl::StrCat(file, ":", args->line);
  // Only errors are limited: INFO and DEBUG lines come only when asked for (GRPC_VERBOSITY,
  // GRPC_TRACE), to debug with, and an assertion's line comes before gRPC aborts.
  const bool limited = args->severity == GPR_LOG_SEVERITY_ERROR &&
                       !absl::StartsWith(message, "assertion failed");
  const char* severity = severity_level == GPR_LOG_SEVERITY_ERROR  ? "error"
                         : severity_level == GPR_LOG_SEVERITY_INFO ? "info"
                                                                   : "debug";
  GrpcLog& log = TheLog();
  std::string line;
  {
    absl::MutexLock lock(&log.mu);
    Spoken& spoken = log.spoken[source];
    const absl::Time now = absl::Now();
    if (limited && now < spoken.last + kQuietFor) {
      ++spoken.left_out;
      return;
    }
    line = absl::StrCat(log.program, ": grpc ", severity, " ", source, ": ", Printable(message));
    if (spoken.left_out > 0) {
      absl::StrAppend(&line, " (and ", spoken.left_out,
                      " more from here since the last one written, left out)");
    }
    spoken = Spoken{.last = now, .left_out = 0};
  }
  line.push_back('\n');
  WriteStderr(line);
}

}  // namespace

void RouteGrpcLogToStderr(absl::string_view program) {
  {
    GrpcLog& log = TheLog();
    absl::MutexLock lock(&log.mu);
    log.program = std::string(program);
  }
  gpr_set_log_function(LogLine);
}

}  // namespace cnp
