// Imports that failed because the operator's code raised (a syntax error, an exception at a
// module's top level), remembered with the files they read, so that a broken module named by
// every document of a view build is imported once, not once per document.
//
// Python retries a failed import each time it is asked, reading and compiling the file anew and
// raising the same error; a view build sends thousands of calls a second naming the function,
// so each call would cost far more than the call itself and put one more traceback in the log.
// The failure is answered again instead (the same status: the user still sees the SyntaxError
// or the exception, its file and line) until one of the files it read changes on disk, which
// is looked at as SourceStamps looks: at most once a second for the calls that run functions,
// at once for Resolve. A remembered failure is also let go after kRetryFailedImportAfter, for
// what no stamp shows (a data file the module reads, a module in another top-level package).
#pragma once

#include <Python.h>

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "service/worker/source_stamps.h"

namespace cnp::worker {

inline constexpr absl::Duration kRetryFailedImportAfter = absl::Seconds(10);

// `status` (an import's failure, for the module's code raising `exception`) with the files that
// failed import read code from attached: a SyntaxError's file, an ImportError's path, the file of
// each frame of the traceback (the modules whose top level was running, which Python has taken
// out of sys.modules again), for the exception and those it was raised from.
absl::Status WithFilesRead(absl::Status status, PyObject* exception);

// The files WithFilesRead attached; nullopt when there are none: the failure did not come from
// running code (a refused file, a module that does not exist), so there is nothing to remember.
std::optional<std::vector<std::string>> FilesRead(const absl::Status& status);

// `status` without what WithFilesRead attached.
absl::Status WithoutFilesRead(absl::Status status);

// `status` marked as the code of `module` raising on import (ModulePolicy's ImportFailed): an
// error of the functions that need it, counted in cnp_function_errors_total under `module` each
// time it fails a task (the failure answered again from FailedImports, which keeps the mark,
// too). A module that does not exist, or is refused, is no function's error and is not marked.
absl::Status MarkImportRaised(absl::Status status, absl::string_view module);
// The module that raised, when `status` is so marked.
std::optional<std::string> ImportRaisedIn(const absl::Status& status);

class FailedImports {
 public:
  // Remembers that `key` (a function name and the version asked for) failed with `status`, the
  // import having read `files`: they and the directories holding them (where a missing module
  // may yet be created) are stamped as they are on disk now.
  void Remember(const std::string& key, absl::Status status,
                const std::vector<std::string>& files, absl::Time now);

  // The failure remembered for `key`, while it still holds: none of its files or directories
  // changed and kRetryFailedImportAfter has not passed. When `rate_limited`, the disk is looked
  // at no more than once a second per key (within it the failure is answered unlooked); when
  // not, at once. A failure that no longer holds is forgotten and `*expired` set, so the
  // caller looks at the disk itself at once rather than waiting for its own next look.
  std::optional<absl::Status> Recall(const std::string& key, bool rate_limited, absl::Time now,
                                     bool* expired);

  // Forgets every remembered failure: code that imported since may be what they lacked.
  void Clear() { failures_.clear(); }

 private:
  struct Failure {
    absl::Status status;
    std::vector<SourceStamps::Stamp> stamps;
    absl::Time remembered;
    absl::Time looked_at;
  };
  std::unordered_map<std::string, Failure> failures_;
};

}  // namespace cnp::worker
