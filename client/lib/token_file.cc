#include "client/lib/token_file.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/secret_file.h"

namespace cnp::client {
namespace {

// Told apart by its ctime too: a chmod or chown changes nothing else, and a file refused as
// unsafe (rotated as a 0644 file, then chmod 600) must be read again once it is safe.
bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_size == b.st_size &&
         a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
         a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenFile>> TokenFile::Open(std::string path) {
  // Looked at before the read: a file replaced in between is read again at the next call.
  struct stat seen {};
  ::stat(path.c_str(), &seen);
  absl::StatusOr<std::string> token = ReadAuthToken(path);
  if (!token.ok()) return token.status();
  return std::unique_ptr<TokenFile>(
      new TokenFile(std::move(path), seen, absl::StrCat("Bearer ", *token)));
}

std::string TokenFile::Authorization() const {
  struct stat now {};
  const bool looked = ::stat(path_.c_str(), &now) == 0;
  absl::MutexLock lock(&mu_);
  if (looked && !SameFile(now, seen_)) {
    seen_ = now;
    if (absl::StatusOr<std::string> token = ReadAuthToken(path_); token.ok()) {
      authorization_ = absl::StrCat("Bearer ", *token);
    }
  }
  return authorization_;
}

}  // namespace cnp::client
