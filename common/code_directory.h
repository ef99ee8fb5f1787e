// Whether a directory Python code is loaded from can be changed by someone other than the
// service's own user and root. Anyone who may add or replace a file there runs code as the
// service (and, with module hot-reload, at once), so cnp-server and cnp-worker refuse to start
// on such a directory, and cnp-adapter refuses it before it replaces a running server.
#pragma once

#include <sys/stat.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace cnp {

// OK when `dir` and every directory passed on the way to it from / (through symlinks as the
// kernel follows them, relative to the current directory, each link owned by root or this
// process's effective user) are owned by root or this process's effective user, `dir` itself
// is writable by neither group nor others, and each directory above it is writable by neither
// or has the sticky bit (/tmp). A `dir` that does not exist
// yet (a PYTHONPATH entry, say) is judged by the deepest directory that does, since whoever
// may write there may create it. `what` names where the directory came from
// ("--python-path", "PYTHONPATH"); the error names the directory at fault and the fix.
absl::Status CheckCodeDirectory(const std::string& dir, absl::string_view what);

// The directory holding a file whose content decides what this process does (a config file, a
// program it runs; common/trusted_file.h), and every directory on the way to it from /: each
// must be owned by root or this process's effective user and writable by neither group nor
// others unless it has the sticky bit (others may add files there, not replace this one). `dir`
// must exist. `what` names the file ("config file /etc/cnp.yml"); `consequence` says what
// another user could do ("change the settings this server obeys").
absl::Status CheckDirectoriesHolding(const std::string& dir, absl::string_view what,
                                     absl::string_view consequence);

// The way to the existing file `file`, as the kernel follows it: every directory entered, the
// file's own included, by the rule of CheckDirectoriesHolding, and every symbolic link followed
// (the file's own name, a link to a link, ...) owned by root or this process's effective user.
// Whoever owns a link may point it elsewhere at any time, even in a directory where the sticky
// bit keeps them from replacing others' entries. The file itself is its caller's to judge;
// NOT_FOUND when it is not there.
absl::Status CheckPathToFile(const std::string& file, absl::string_view what,
                             absl::string_view consequence);

// The symbolic links alone of CheckPathToFile, for a file already opened and checked by its
// descriptor (`opened`, what fstat said; cnp-worker's code file guard): a link another user owns
// lets them pick any file that check accepts (any of root's). The directories are not held to
// the rule here: the operator's code is in directories checked at start, and the standard
// library's are root's. ABORTED when the file the walk reaches is not the one opened (the path
// changed meanwhile: a link swapped for a file), which a caller may open again once.
absl::Status CheckLinksToOpenedFile(const std::string& file, const struct stat& opened,
                                    absl::string_view what, absl::string_view consequence);

}  // namespace cnp
