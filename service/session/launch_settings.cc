#include "service/session/launch_settings.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cnp::session {

std::string LaunchSettingsText(const std::vector<std::string>& python_paths,
                               const std::vector<std::string>& allowed_modules, int workers) {
  return absl::StrCat("python-path=", absl::StrJoin(python_paths, ","),
                      " allow-module=", absl::StrJoin(allowed_modules, ","),
                      " workers=", workers > 0 ? absl::StrCat(workers) : "default");
}

}  // namespace cnp::session
