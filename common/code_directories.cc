#include "common/code_directories.h"

#include <system_error>
#include <filesystem>

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

absl::Status CheckCodeDirectories(const std::vector<CodeDirectory>& dirs) {
  for (const CodeDirectory& dir : dirs) {
    std::error_code error;
    if (dir.source != CodeSource::kPythonPathVariable &&
        !std::filesystem::is_directory(dir.path, error)) {
      return absl::NotFoundError(
          absl::StrCat(dir.Setting(), " ", dir.path, " is not a directory"));
    }
    if (absl::Status s = CheckCodeDirectory(dir.path, dir.Setting()); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace cnp
