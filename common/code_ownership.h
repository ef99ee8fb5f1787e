// The one rule for a file or directory Python code is loaded from: nobody but root and this
// process's effective user may change it. Whoever may write to a module, a bytecode cache or
// a directory of code runs code as the service, so cnp-server, cnp-worker and cnp-adapter
// refuse such code (common/code_directory.h for directories, cnp-worker's module policy and
// bytecode guard for files), each with this rule and its message.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>
#include <string_view>

namespace cnp {

// Why others could change the file or directory at `path`, and what stops them.
struct OwnershipProblem {
  std::string what;  // "belongs to uid 65534, neither root nor this user (uid 0)",
                     // "is writable by every user (mode 0777)"
  std::string fix;   // "run chmod go-w PATH", "chown PATH to root or uid 0, ..."
};

enum class StickyBit {
  // A directory others may write to is refused, sticky or not: the code's own directory,
  // where the sticky bit keeps others from replacing files but not from adding new modules.
  kNotEnough,
  // A directory others may write to passes with the sticky bit: a directory above the code
  // (/tmp), where others may add entries but not rename or replace ours.
  kSuffices,
};

// Empty when `st` (what stat() said of `path`) belongs to root or this process's effective
// user and neither its group nor others may write to it (see StickyBit); otherwise what is
// wrong, naming no path (callers say which file they mean), and the fix, naming `path`; when
// the owner is wrong, the fix offers to move `what_is_there` ("the code", "the file") elsewhere.
std::optional<OwnershipProblem> OthersCanChange(const std::string& path, const struct stat& st,
                                                StickyBit sticky = StickyBit::kNotEnough,
                                                std::string_view what_is_there = "the code");

}  // namespace cnp
