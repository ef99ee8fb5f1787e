// The directories Python code is loaded from before any of it runs, each with the setting that
// put it there. cnp-server checks them at start, cnp-adapter before it starts (or replaces) a
// server, and cnp-worker checks them again and puts them on sys.path: one list, so that what
// the three refuse cannot drift apart. (A worker adds the virtualenv's site-packages and what
// its .pth files name, which only Python can tell.)
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace cnp {

enum class CodeSource {
  kPythonPathFlag,      // --python-path
  kPythonPathVariable,  // PYTHONPATH
  kVirtualenv,          // --virtualenv
};

struct CodeDirectory {
  std::string path;
  CodeSource source;

  // "--python-path", "PYTHONPATH" or "--virtualenv", as messages name it.
  absl::string_view Setting() const;

  bool operator==(const CodeDirectory&) const = default;
};

// Each --python-path directory, then each entry of PYTHONPATH (`pythonpath_variable`, the
// variable's value or null when it is unset; empty entries skipped), then `virtualenv` unless
// it is empty: the order they go on sys.path.
std::vector<CodeDirectory> CodeDirectories(const std::vector<std::string>& python_paths,
                                           const char* pythonpath_variable,
                                           const std::string& virtualenv);

// The first refusal among `dirs`: NOT_FOUND for a --python-path or --virtualenv that is not a
// directory (a PYTHONPATH entry may be missing, as Python allows), FAILED_PRECONDITION for one
// another user could change (common/code_directory.h), PERMISSION_DENIED for one this process
// may not read and enter (Python would skip it silently).
absl::Status CheckCodeDirectories(const std::vector<CodeDirectory>& dirs);

}  // namespace cnp
