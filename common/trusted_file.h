// Files whose content decides what a cnp program does or whom it trusts: cnp-server's --config
// file (its settings include --allow-uid and --worker-binary), the worker binary it runs, and
// the token and key files. Whoever may change such a file commands the program, so it must pass
// the owner/mode rule of code files (common/code_ownership.h): owned by root or this process's
// effective user and writable by neither group nor others, in directories that let nobody else
// replace it.
#pragma once

#include <sys/stat.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace cnp {

// FAILED_PRECONDITION, naming `what` and `path`, what is wrong and the fix (chown, chmod go-w),
// when `st` (the file's stat, after symlinks) or a directory holding `path` or the file it
// leads to fails that rule. `consequence` says what another user could then do ("change the
// settings cnp-server obeys"). Checks the path after opening: callers report a missing file
// their own way first.
absl::Status CheckTrustedFile(const std::string& path, const struct stat& st,
                              absl::string_view what, absl::string_view consequence);

// The same for a file given by path only (stat()ed here).
absl::Status CheckTrustedFile(const std::string& path, absl::string_view what,
                              absl::string_view consequence);

}  // namespace cnp
