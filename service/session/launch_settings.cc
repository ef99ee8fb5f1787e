#include "service/session/launch_settings.h"

#include <algorithm>
#include <string_view>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace cnp::session {

std::string CanonicalSettingsPath(std::string_view path) {
  const bool absolute = !path.empty() && path.front() == '/';
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(absl::string_view(path.data(), path.size()), '/')) {
    if (part.empty() || part == ".") continue;
    parts.push_back(part);
  }
  const std::string joined = absl::StrJoin(parts, "/");
  if (absolute) return absl::StrCat("/", joined);
  return joined.empty() ? "." : joined;
}

std::string LaunchSettingsText(const std::vector<std::string>& python_paths,
                               const std::vector<std::string>& allowed_modules, int workers,
                               const std::vector<std::string>& preload_modules,
                               absl::Duration call_timeout) {
  // Paths in their order (the first holding a module is the one imported), each once.
  std::vector<std::string> paths;
  absl::flat_hash_set<std::string> seen;
  for (const std::string& path : python_paths) {
    std::string canonical = CanonicalSettingsPath(path);
    if (seen.insert(canonical).second) paths.push_back(std::move(canonical));
  }
  // Which modules are allowed is a set.
  std::vector<std::string> modules = allowed_modules;
  std::sort(modules.begin(), modules.end());
  modules.erase(std::unique(modules.begin(), modules.end()), modules.end());
  std::string text = absl::StrCat("python-path=", absl::StrJoin(paths, ","),
                                  " allow-module=", absl::StrJoin(modules, ","),
                                  " workers=", workers > 0 ? absl::StrCat(workers) : "default");
  std::vector<std::string> preloads;
  for (const std::string& module : preload_modules) {
    if (std::find(preloads.begin(), preloads.end(), module) == preloads.end()) {
      preloads.push_back(module);
    }
  }
  if (!preloads.empty()) absl::StrAppend(&text, " preload-module=", absl::StrJoin(preloads, ","));
  if (call_timeout != absl::ZeroDuration()) {
    absl::StrAppend(&text, " call-timeout=", absl::FormatDuration(call_timeout));
  }
  return text;
}

}  // namespace cnp::session
