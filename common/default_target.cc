#include "common/default_target.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cnp {
namespace {

// `path` is a directory (not a symlink) that `uid` owns.
bool OwnedDirectory(const std::string& path, uid_t uid) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == uid;
}

bool Absent(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) != 0;
}

}  // namespace

std::string RuntimeDirFor(uid_t uid, const std::string& tmp, const char* xdg_runtime_dir,
                          const char* home) {
  const std::string shared = absl::StrCat(tmp, "/cnp-", uid);
  if (Absent(shared) || OwnedDirectory(shared, uid)) return shared;
  // Anyone may create names in /tmp: another user made ours first. A directory of this user's
  // own, where nobody else can, takes its place.
  for (const char* base : {xdg_runtime_dir, home}) {
    if (base == nullptr || !absl::StartsWith(base, "/") || !OwnedDirectory(base, uid)) continue;
    return absl::StrCat(base, base == home ? "/.cnp" : "/cnp");
  }
  return shared;  // nowhere else: the clients refuse it, saying who owns it
}

std::string DefaultRuntimeDir() {
  return RuntimeDirFor(::getuid(), "/tmp", std::getenv("XDG_RUNTIME_DIR"), std::getenv("HOME"));
}

std::string DefaultTarget() {
  if (const char* env = std::getenv("CNP_TARGET"); env != nullptr && *env != '\0') return env;
  return absl::StrCat("unix:", DefaultRuntimeDir(), "/cnp.sock");
}

}  // namespace cnp
