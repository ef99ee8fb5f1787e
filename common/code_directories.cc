#include "common/code_directories.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/code_directory.h"

namespace cnp {

absl::string_view CodeDirectory::Setting() const {
  switch (source) {
    case CodeSource::kPythonPathFlag: return "--python-path";
    case CodeSource::kPythonPathVariable: return "PYTHONPATH";
    case CodeSource::kVirtualenv: return "--virtualenv";
  }
  return "";
}

std::vector<CodeDirectory> CodeDirectories(const std::vector<std::string>& python_paths,
                                           const char* pythonpath_variable,
                                           const std::string& virtualenv) {
  std::vector<CodeDirectory> dirs;
  for (const std::string& dir : python_paths) {
    dirs.push_back({.path = dir, .source = CodeSource::kPythonPathFlag});
  }
  if (pythonpath_variable != nullptr) {
    for (absl::string_view dir : absl::StrSplit(pythonpath_variable, ':', absl::SkipEmpty())) {
      dirs.push_back({.path = std::string(dir), .source = CodeSource::kPythonPathVariable});
    }
  }
  if (!virtualenv.empty()) dirs.push_back({.path = virtualenv, .source = CodeSource::kVirtualenv});
  return dirs;
}

namespace {

// A directory the process may not enter and list: Python skips such a path entry without a
// word, so every call would answer "No module named ..." (an operator probe: a root-only
// --python-path under a server running as cnp, the error at INFO, call after call).
absl::Status NotReadable(const CodeDirectory& dir) {
  return absl::PermissionDeniedError(absl::StrCat(
      dir.Setting(), " ", dir.path, " cannot be read by uid ", ::geteuid(),
      ", which cnp runs as here: Python would skip it and find none of its modules; let that "
      "user read and enter it and the directories above it (chmod o+rx, or a group it is in)"));
}

}  // namespace

absl::Status CheckCodeDirectories(const std::vector<CodeDirectory>& dirs) {
  for (const CodeDirectory& dir : dirs) {
    struct stat st {};
    const bool exists = ::stat(dir.path.c_str(), &st) == 0;
    if (!exists && errno == EACCES) return NotReadable(dir);
    if (dir.source != CodeSource::kPythonPathVariable && !(exists && S_ISDIR(st.st_mode))) {
      return absl::NotFoundError(
          absl::StrCat(dir.Setting(), " ", dir.path, " is not a directory"));
    }
    if (absl::Status s = CheckCodeDirectory(dir.path, dir.Setting()); !s.ok()) return s;
    if (exists && S_ISDIR(st.st_mode) &&
        ::faccessat(AT_FDCWD, dir.path.c_str(), R_OK | X_OK, AT_EACCESS) != 0 && errno == EACCES) {
      return NotReadable(dir);
    }
  }
  return absl::OkStatus();
}

}  // namespace cnp
